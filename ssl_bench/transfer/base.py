"""The transfer-strategy interface.

``TransferStrategy.fit(ctx)`` trains whatever networks the strategy needs on one fold's training
data (:class:`ssl_bench.training.context.FitContext`) and returns the downstream classifier, one
input channel and one logit, which alone predicts new images (``model(x) -> (B, 1)`` logits): a
timm model, or a module with an ``architecture`` dict that :mod:`ssl_bench.models.classifiers`
rebuilds. Its ``state_dict`` (and architecture) is what a run saves as ``model.pt``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..pretext.base import PretextTask
from ..training.context import FitContext
from ..training.view_pairs import predict_image_scores


class TransferStrategy(ABC):
    """Base class of registered transfer strategies."""

    #: pretext kinds this strategy can train ("image", "embedding", "masked", "none")
    accepts: ClassVar[tuple[str, ...]] = ("image", "embedding")
    #: components it needs besides the pretext and the backbone, as keys of
    #: :data:`ssl_bench.components.NEEDS` (e.g. ``("pretext_network",)``): checked before a run
    #: starts and part of the default run name
    needs: ClassVar[tuple[str, ...]] = ()
    #: True when the pretext task trains in a stage of its own before the downstream training
    #: (``finetune``, ``linear``, ``knn``), which ``--pretext-data`` can then run on another pool;
    #: False when pretext and downstream train together on the fold's images (``multitask``,
    #: ``collab``: their pretext loss shapes every downstream step, so it has no other pool)
    separate_pretext_stage: ClassVar[bool] = False
    #: True when its classifier scores a breast's CC and MLO views together (``multiview``, whose
    #: classifier declares ``takes_view_pairs`` too): a run then refuses folds that split a breast
    #: and says how many breasts it sees in one view only
    takes_view_pairs: ClassVar[bool] = False
    #: what each loss name its steps return means (the progress explains them once per run)
    losses: ClassVar[dict[str, str]] = {
        "bce": "weighted binary cross-entropy of the classifier (TSBN eq. 3; train.pos_weight on malignant)",
        "pretext": "the pretext task's own loss (e.g. GSIM's restoration MSE, SimCLR's NT-Xent)",
    }
    name: ClassVar[str] = "transfer"  # set to the registered name by the registry

    def check(self, pretext_name: str, pretext: PretextTask) -> None:
        """Refuse a pretext task this strategy cannot use, with the reason."""
        if pretext.kind not in self.accepts:
            kinds = ", ".join(self.accepts)
            raise ConfigError(
                f"transfer '{self.name}' cannot use pretext '{pretext_name}' "
                f"(a {pretext.kind} task); it needs a pretext of kind: {kinds}"
            )

    @abstractmethod
    def fit(self, ctx: FitContext) -> nn.Module:
        """Train on ``ctx``'s images and return the downstream classifier (on ``ctx.device``)."""

    def training_scores(self, classifier: nn.Module, ctx: FitContext, batch_size: int) -> np.ndarray:
        """The classifier's probability of malignancy for each of ``ctx``'s training images, from
        which the fold chooses its operating point: the classifier's own scores, unless the
        strategy's classifier would score its training images as no new image can be scored
        (a kNN probe finds each image among its own neighbours: ``knn`` overrides this). A
        classifier of view pairs gives each image its breast's score (``ctx.view_pairs``)."""
        return predict_image_scores(classifier, ctx.images, ctx.view_pairs, ctx.device, ctx.amp_dtype,
                                    batch_size=batch_size)
