"""What a transfer strategy gets to train on one fold: :class:`FitContext`, the facade over the
fold's batches (:mod:`.batches`), the network and optimiser builders (:mod:`.builders`) and the
training loop (:mod:`.loop`). Strategies, built-in or plugins, use only this class.

The loop is the CUDA fast path every strategy shares:

- the images sit on the device as one float16 tensor (:class:`ssl_bench.training.images.DeviceImages`);
  each epoch's order is one ``randperm`` on the device, batches are gathered and augmented there
  (a dataset above the memory budget is streamed from the host instead: :mod:`.images`);
- the forward pass runs under bf16 autocast on CUDA (losses in fp32), modules and batches are
  channels_last, cuDNN autotunes the fixed shapes, Adam is fused (one kernel for all parameters);
- no host-device sync inside a step: losses are accumulated on the device and read back once
  per epoch (no ``.item()``, no Python branching on tensor values);
- ``train.compile`` wraps modules (and the functions a strategy passes to :meth:`FitContext.compiled`)
  in ``torch.compile``;
- CUDA-graph capture of the whole step (``train.cuda_graphs``, or the ``SSL_BENCH_CUDA_GRAPHS=1``
  environment variable): see :mod:`ssl_bench.training.cuda_graphs`.

On the CPU the same code runs in fp32 with none of the CUDA-only settings, so the fast path's
results equal a plain PyTorch loop's (``tests/test_fast_path.py``).

With ``train.checkpoint_every`` and a ``checkpoint_store`` (the run directory's), the loop saves
the fold's training state every few epochs and a fold started again resumes from it: every module
passed to :meth:`FitContext.prepare` and every optimiser of :meth:`FitContext.optimizer` is part of
that state (:mod:`ssl_bench.training.checkpoint`), so strategies need nothing more.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data.breasts import ViewPairs
from ..pretext.base import PretextTask
from .batches import FoldBatches, augment_batch
from .builders import Builders
from .checkpoint import CheckpointStore, FoldCheckpoints
from .images import StreamedImages
from .device import configure_fast_path, graphs_requested
from .loop import StepFn, TrainingLoop, optimizer_step
from .losses import weighted_bce
from .pretext_cache import PretextPool
from .progress import TrainingProgress
from .tracking import HistorySink

F_ = TypeVar("F_", bound=Callable)

__all__ = ["FitContext", "StepFn", "augment_batch", "optimizer_step", "weighted_bce"]


@dataclass
class FitContext:
    """Training inputs and helpers for one fold (see module docstring)."""

    config: Config
    pretext: PretextTask
    # (N, 1, H, W) float16 in [0, 1]: a tensor on `device`, or StreamedImages read from the host as
    # needed (a dataset above the memory budget; slices and shape work alike: training/images.py)
    images: torch.Tensor | StreamedImages
    labels: torch.Tensor  # (N,) float32 on `device`, 1 = malignant
    device: torch.device
    amp_dtype: torch.dtype | None = None
    progress: TrainingProgress = field(default_factory=lambda: TrainingProgress(enabled=False))
    #: the pool the pretext stage trains on instead of ``images`` (``--pretext-data``), else None
    pretext_pool: PretextPool | None = None
    #: where the fold's training state is saved every ``train.checkpoint_every`` epochs (None: nowhere)
    checkpoint_store: CheckpointStore | None = None
    #: where each epoch of the history streams as well (--log; None: history.csv only)
    sink: HistorySink | None = None
    #: ``(N,)`` patient id of each training image, for anything split within the training images
    #: that must keep a patient's images together (None: unknown, e.g. a data-parallel worker's)
    patients: np.ndarray | None = None
    #: the breasts of the training images and their CC-MLO pairs (:mod:`ssl_bench.data.breasts`),
    #: for a strategy that trains on a breast's views (None: unknown, each image a breast of its own)
    view_pairs: ViewPairs | None = None
    #: plain values a strategy records about its fit (the linear probe's chosen C), which the fold
    #: writes to its metrics.json as ``fit``
    fit_info: dict[str, Any] = field(default_factory=dict)
    #: CUDA-graph capture of training steps: asked for (config or env), and on a CUDA device
    use_graphs: bool = field(init=False)
    data: FoldBatches = field(init=False)
    builders: Builders = field(init=False)
    loop: TrainingLoop = field(init=False)

    def __post_init__(self) -> None:
        configure_fast_path(self.device)
        t = self.config.train
        self.use_graphs = self.device.type == "cuda" and graphs_requested(t)
        self.data = FoldBatches(self.images, self.labels, t.batch_size, t.augment, t.channels_last)
        self.builders = Builders(self.config, self.device, self.amp_dtype, self.use_graphs)
        self.loop = TrainingLoop(self.data, self.use_graphs, self.progress,
                                 learning_rate=self.builders.learning_rate,
                                 start_epoch=self.builders.start_epoch, sink=self.sink)
        if self.checkpoint_store is not None and t.checkpoint_every > 0:
            self.loop.checkpoints = FoldCheckpoints(
                t.checkpoint_every, self.checkpoint_store, self.builders.modules, self.builders.optimizers,
                self.pretext.stateful_modules(), self.device, announce=self.progress.note)

    def over(self, images: torch.Tensor, labels: torch.Tensor) -> "FitContext":
        """The same run's context over other images (a pretext pool), with its own loop and history
        (and no checkpoints: a pool's stage is shared by folds and cached on its own)."""
        return FitContext(config=self.config, pretext=self.pretext, images=images, labels=labels,
                          device=self.device, amp_dtype=self.amp_dtype, progress=self.progress)

    # ---- factories (Builders) --------------------------------------------------------------
    def new_backbone(self) -> nn.Module:
        """The downstream timm backbone with a 1-logit classifier, 1 input channel."""
        return self.builders.new_backbone()

    def new_pretext_network(self) -> nn.Module:
        """The registered pretext network (``model.pretext_net``), image in, image out."""
        return self.builders.new_pretext_network()

    def params(self, name: str) -> dict:
        """The ``params.<name>`` options of the run's config."""
        return self.config.component_params(name)

    def optimizer(self, *modules: nn.Module) -> torch.optim.Optimizer:
        """Adam with the run's learning rate and weight decay (fused on CUDA)."""
        return self.builders.optimizer(*modules)

    def prepare(self, module: nn.Module, compile: bool = True) -> nn.Module:
        """Move to the device for the fast path; the module to call in steps (compiled when
        ``train.compile``; the original stays the one to save)."""
        return self.builders.prepare(module, compile)

    def compiled(self, fn: F_) -> F_:
        """``torch.compile(fn)`` when ``train.compile``, else ``fn`` itself."""
        return self.builders.compiled(fn)

    def autocast(self):
        """The forward pass's autocast context (bf16 on CUDA; a no-op in fp32)."""
        return self.builders.autocast()

    def bce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """TSBN eq. 3 with the run's malignant weight (``train.pos_weight``)."""
        return weighted_bce(logits, labels, self.config.train.pos_weight)

    # ---- data (FoldBatches) ----------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return self.data.n_images

    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch()

    def batches(self, augment: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of ``(images (B,1,H,W), labels (B,))`` on the device (in
        data-parallel training the whole global batches: :meth:`share_of`)."""
        return self.data.epoch(augment)

    def share_of(self, value: Any, batch: int) -> Any:
        """In data-parallel training, this worker's share of ``value`` (tensors, a
        :class:`~ssl_bench.pretext.base.PretextBatch`, lists, tuples, dicts of them) drawn for a
        global batch of ``batch`` images; in one process ``value`` itself. A step run on several
        workers draws for the whole batch, then keeps its share (:class:`.batches.FoldBatches`)."""
        return self.data.share_of(value, batch)

    # ---- the loop (TrainingLoop) -------------------------------------------------------------
    @property
    def history(self) -> list[dict]:
        """One row per trained epoch: stage, epoch, each mean loss, learning rate, seconds."""
        return self.loop.history

    @property
    def graph_stats(self) -> dict[str, dict]:
        """Per stage, how the CUDA-graph wrapper ran its steps (empty when graphs are off)."""
        return self.loop.graph_stats

    def train(self, stage: str, epochs: int, step: StepFn,
              after_epoch: Callable[[int], dict[str, float]] | None = None) -> dict[str, float]:
        """Run ``epochs`` epochs of ``step(x, y) -> {loss name: detached loss}``; returns the last
        epoch's mean losses (see :class:`~ssl_bench.training.loop.TrainingLoop`; ``after_epoch``
        adds columns to each epoch's history row, e.g. :mod:`.online_probe`'s)."""
        return self.loop.run(stage, epochs, step, after_epoch)

    def train_on(self, images: torch.Tensor, labels: torch.Tensor, stage: str, epochs: int,
                 step: StepFn) -> dict[str, float]:
        """:meth:`train` over other samples of this fold than its images, e.g. its breasts' view
        pairs ``(U, 2, H, W)`` on the device with their labels ``(U,)``: the same batch size and
        augmentation (one flip and gamma per sample, all its channels alike), the same loop, so
        the stage joins this fold's history, progress and checkpoints."""
        t = self.config.train
        fold_batches = self.loop.batches
        self.loop.batches = FoldBatches(images, labels, t.batch_size, t.augment, t.channels_last, fold_batches.share)
        try:
            return self.loop.run(stage, epochs, step)
        finally:
            self.loop.batches = fold_batches
