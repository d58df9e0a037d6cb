"""The Non-spatial control's classifier: gradient-boosted trees on an image's position-free
features (:func:`ssl_bench.models.position_free.union`), as an ``nn.Module`` that ``model.pt``
holds as plain tensors.

A fitted scikit-learn ``HistGradientBoostingClassifier`` cannot go into ``model.pt`` (read with
``torch.load(weights_only=True)``: tensors and plain values only), so :meth:`from_fitted` copies its
trees out: each ``TreePredictor.nodes`` record's ``feature_idx``, ``num_threshold``, ``left``,
``right``, ``is_leaf``, ``missing_go_to_left`` and ``value`` become one row of ``(trees, nodes)``
buffers (shorter trees padded with unreachable leaves of value 0), ``_baseline_prediction`` a
scalar. :meth:`decision` walks them as scikit-learn's ``_predict_from_raw_data`` does on raw
(unbinned) float64 features: from node 0, left when the value is ``<= num_threshold`` or when it is
NaN and ``missing_go_to_left``, until a leaf; the logit is the baseline plus the trees' leaf values
added in tree order, as ``_raw_predict`` adds them, so it equals ``decision_function`` bit for bit
and its sigmoid ``predict_proba`` (categorical splits and multi-class models are refused).

:meth:`~NonSpatialTreesClassifier.features` rounds the image to float16 first (the precision of
every dataset's cache, so that ``ssl-bench predict``'s float32 preprocessing gives the run's own
features) and computes them with numpy and scipy on the CPU; the trees run on the image's device.
``architecture`` records the tree shapes and :data:`~ssl_bench.models.position_free.FEATURES_VERSION`:
a file whose features this ssl-bench computes differently is refused in one line.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..registry import CLASSIFIERS
from . import position_free

NODE_FIELDS = ("feature_idx", "num_threshold", "left", "right", "is_leaf", "missing_go_to_left", "value")
_DTYPES = {"feature_idx": torch.int64, "num_threshold": torch.float64, "left": torch.int64, "right": torch.int64,
           "is_leaf": torch.bool, "missing_go_to_left": torch.bool, "value": torch.float64}


@CLASSIFIERS.register("nonspatial_trees")
class NonSpatialTreesClassifier(nn.Module):
    """Gradient-boosted trees on the position-free features (intensities, components, gradients, ...)."""

    feature_idx: torch.Tensor
    num_threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    is_leaf: torch.Tensor
    missing_go_to_left: torch.Tensor
    value: torch.Tensor
    baseline: torch.Tensor

    def __init__(self, threshold: float = position_free.THRESHOLD, n_trees: int = 0, n_nodes: int = 1,
                 features_version: int = position_free.FEATURES_VERSION):
        super().__init__()
        if features_version != position_free.FEATURES_VERSION:
            raise ValueError(f"the model uses position-free features of version {features_version}; this "
                             f"ssl-bench computes version {position_free.FEATURES_VERSION} (rerun the fold)")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        if int(n_trees) != n_trees or n_trees < 0 or int(n_nodes) != n_nodes or n_nodes < 1:
            raise ValueError(f"n_trees must be >= 0 and n_nodes >= 1, got {n_trees!r} and {n_nodes!r}")
        self.threshold, self.n_trees, self.n_nodes = float(threshold), int(n_trees), int(n_nodes)
        self.num_features = len(position_free.feature_names())
        for name, dtype in _DTYPES.items():
            self.register_buffer(name, torch.zeros(self.n_trees, self.n_nodes, dtype=dtype))
        self.is_leaf.fill_(True)
        self.register_buffer("baseline", torch.zeros((), dtype=torch.float64))

    @property
    def architecture(self) -> dict[str, Any]:
        """What rebuilds this module before its ``state_dict`` is loaded (``model.pt``)."""
        return {"name": self.name, "threshold": self.threshold, "n_trees": self.n_trees,
                "n_nodes": self.n_nodes, "features_version": position_free.FEATURES_VERSION}

    @classmethod
    def from_fitted(cls, model, threshold: float = position_free.THRESHOLD) -> "NonSpatialTreesClassifier":
        """The module of a binary ``HistGradientBoostingClassifier`` fitted on :func:`union`'s features."""
        if model.n_trees_per_iteration_ != 1:
            raise ValueError("only a binary HistGradientBoostingClassifier can be copied")
        trees = [predictors[0].nodes for predictors in model._predictors]
        if any(nodes["is_categorical"].any() for nodes in trees):
            raise ValueError("categorical splits are not supported")
        module = cls(threshold, n_trees=len(trees), n_nodes=max([len(n) for n in trees], default=1))
        if model.n_features_in_ != module.num_features:
            raise ValueError(f"the model was fitted on {model.n_features_in_} features, not the "
                             f"{module.num_features} position-free ones")
        with torch.no_grad():
            for t, nodes in enumerate(trees):
                for name in NODE_FIELDS:
                    values = torch.as_tensor(np.asarray(nodes[name]).astype(np.float64 if _DTYPES[name] == torch.float64
                                                                            else np.int64))
                    getattr(module, name)[t, : len(nodes)] = values.to(_DTYPES[name])
            module.baseline.fill_(float(np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)[0]))
        return module

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` images in [0, 1] -> ``(B, F)`` float64 position-free features, on ``x``'s device."""
        images = x.detach().reshape(x.shape[0], x.shape[-2], x.shape[-1]).to("cpu", torch.float16)
        values, _ = position_free.compute(images.float().numpy(), "union", self.threshold)
        return torch.from_numpy(values).to(x.device)

    @torch.no_grad()
    def decision(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` float64 features -> ``(B,)`` float64 raw scores (``decision_function``)."""
        b = features.shape[0]
        raw = torch.zeros(b, dtype=torch.float64, device=features.device) + self.baseline
        if self.n_trees == 0:
            return raw
        trees = torch.arange(self.n_trees, device=features.device).expand(b, -1)
        node = torch.zeros(b, self.n_trees, dtype=torch.int64, device=features.device)
        for _ in range(self.n_nodes):
            leaf = self.is_leaf[trees, node]
            if bool(leaf.all()):
                break
            value = features.gather(1, self.feature_idx[trees, node])
            left = torch.where(torch.isnan(value), self.missing_go_to_left[trees, node],
                               value <= self.num_threshold[trees, node])
            child = torch.where(left, self.left[trees, node], self.right[trees, node])
            node = torch.where(leaf, node, child)
        leaves = self.value[trees, node]
        for t in range(self.n_trees):  # in tree order, as scikit-learn adds them
            raw = raw + leaves[:, t]
        return raw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B, 1)`` float32 logits of malignancy."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            raw = self.decision(self.features(x))
        return raw.to(torch.float32)[:, None]
