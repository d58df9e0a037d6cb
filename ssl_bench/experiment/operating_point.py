"""The operating point a fold reports beside the paper's threshold 0.5, and the check that a
fold's held-out scores say something at all.

TSBN reports accuracy, sensitivity and specificity at 0.5. With the paper's malignant weight 15
and few epochs, 0.5 can sit where nearly every image is called malignant, so each fold also
reports an operating point chosen on its own *training* predictions (never on the held-out
fold): Youden's J = sensitivity + specificity - 1 maximised over the training ROC curve (Youden
1950), placed halfway between the chosen training score and the next lower one, so that a
classifier that separates its training images perfectly gets the middle of the gap rather than
its edge.

A fold is *degenerate* when its held-out scores are (nearly) constant or when at least 95% of
its held-out images fall on one side of 0.5: its threshold metrics then describe the threshold,
not the classifier.
"""
from __future__ import annotations

import numpy as np

from .clinical import youden_threshold

#: share of held-out images on one side of 0.5 from which a fold is flagged
ONE_SIDED_SHARE = 0.95
#: score spread (max - min) below which a fold's scores count as constant
CONSTANT_SPREAD = 1e-6


def operating_threshold(labels, scores) -> float:
    """Youden-optimal threshold on (training) predictions, midway into the gap below it; 0.5
    when the labels hold a single class (nothing to choose from)."""
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    t = youden_threshold(y, s)
    below = s[s < t]
    return float((t + below.max()) / 2) if below.size else t


def degenerate_reason(scores, threshold: float = 0.5) -> str:
    """Why a fold's held-out scores are degenerate, or ``""`` when they are not."""
    s = np.asarray(scores, dtype=float)
    if s.size == 0:
        return "no held-out scores"
    if float(s.max() - s.min()) < CONSTANT_SPREAD:
        return f"constant scores ({float(s.mean()):.3g})"
    positive = float((s >= threshold).mean())
    if positive >= ONE_SIDED_SHARE:
        return f"{positive:.0%} of scores >= {threshold:g} (all malignant)"
    if 1 - positive >= ONE_SIDED_SHARE:
        return f"{1 - positive:.0%} of scores < {threshold:g} (all benign)"
    return ""
