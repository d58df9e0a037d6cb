"""Which images show the same breast, and which of them pair up as its CC and MLO views: the units
that a view-fused classifier scores (the ``multiview`` transfer; the view-wise late fusion of Wu et
al., "Deep Neural Networks Improve Radiologists' Performance in Breast Cancer Screening", IEEE TMI
2019, which reads one CC and one MLO view of a breast).

A breast is a ``(patient_id, laterality)`` pair; an image without a laterality (``""``) is a breast
of its own, seen in one view. Pairing rule, within a breast: its CC images and its MLO images,
each in table order, pair up, the i-th CC with the i-th MLO; an image left over (a breast with more
CC than MLO images, or the reverse) and an image of any other view (ML, LM, XCCL, unknown) is a
unit of one view. A one-view unit holds a CC image in the CC slot and any other image in the MLO
slot (the lateral views are closer to the MLO than to the CC). A breast with at least one pair is a
two-view breast, any other a one-view breast. A breast's score is the mean of its units' fused
scores, and each of its images gets it, so that the breast-level metrics are the fused model's.
Everything here is plain data (numpy), computed from the sample table alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError

#: the two view slots of a unit, in the order a view-fused classifier takes them
VIEW_SLOTS = ("CC", "MLO")
NO_IMAGE = -1  # a unit's slot without an image, an image without a partner


@dataclass(frozen=True)
class ViewPairs:
    """The units of a set of ``N`` images: unit ``u`` is the image ``cc[u]`` in the CC slot and
    ``mlo[u]`` in the MLO slot (:data:`NO_IMAGE` where that view is missing), of breast
    ``unit_breast[u]``; ``breast[i]`` is image ``i``'s breast."""

    cc: np.ndarray
    mlo: np.ndarray
    unit_breast: np.ndarray
    breast: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.breast)

    @property
    def n_units(self) -> int:
        return len(self.cc)

    @property
    def n_breasts(self) -> int:
        return int(self.breast.max()) + 1 if len(self.breast) else 0

    def partners(self) -> np.ndarray:
        """``(N,)`` each image's partner: the other view of its unit, :data:`NO_IMAGE` for none."""
        out = np.full(self.n_images, NO_IMAGE, dtype=np.int64)
        both = (self.cc != NO_IMAGE) & (self.mlo != NO_IMAGE)
        out[self.cc[both]] = self.mlo[both]
        out[self.mlo[both]] = self.cc[both]
        return out

    def counts(self) -> dict[str, int]:
        """What a fold records of its breasts: ``two_view_breasts`` (with at least one CC-MLO
        pair), ``one_view_breasts`` (the others) and ``images``."""
        both = (self.cc != NO_IMAGE) & (self.mlo != NO_IMAGE)
        two = len(np.unique(self.unit_breast[both]))
        return {"two_view_breasts": int(two), "one_view_breasts": self.n_breasts - int(two), "images": self.n_images}

    def unit_labels(self, labels: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(U,)`` each unit's label: its breast's, the maximum of the breast's image labels (a
        breast is malignant when any of its images is)."""
        per_breast = np.full(self.n_breasts, -np.inf)
        np.maximum.at(per_breast, self.breast, np.asarray(labels, dtype=np.float64))
        return per_breast[self.unit_breast]

    def image_scores(self, unit_scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(N,)`` each image's score: the mean of its breast's unit scores."""
        sums = np.bincount(
            self.unit_breast, weights=np.asarray(unit_scores, dtype=np.float64), minlength=self.n_breasts
        )
        units = np.bincount(self.unit_breast, minlength=self.n_breasts)
        return (sums / np.maximum(units, 1))[self.breast]


def one_view_each(n_images: int) -> ViewPairs:
    """``n_images`` images of unknown breasts: each a one-view breast in the MLO slot."""
    index = np.arange(n_images, dtype=np.int64)
    return ViewPairs(cc=np.full(n_images, NO_IMAGE, dtype=np.int64), mlo=index, unit_breast=index, breast=index)


def view_pairs(patients: Sequence, lateralities: Sequence, views: Sequence) -> ViewPairs:
    """The breasts and units of images given by their patient, laterality (``"L"``/``"R"``, else
    none) and view, by the rule of the module docstring.

    Args:
        patients: ``(N,)`` patient ids.
        lateralities: ``(N,)`` ``"L"``, ``"R"`` or anything else for unknown.
        views: ``(N,)`` ``"CC"``, ``"MLO"`` or another view (case and spaces ignored).

    Returns:
        The images' :class:`ViewPairs`, units in the order of their breast's first image.
    """
    patients, sides, kinds = _texts(patients, upper=False), _texts(lateralities), _texts(views)
    if not len(patients) == len(sides) == len(kinds):
        raise ValueError(f"{len(patients)} patients, {len(sides)} lateralities and {len(kinds)} views")
    members: dict[object, list[int]] = {}
    for i, (patient, side) in enumerate(zip(patients, sides)):
        members.setdefault((patient, side) if side in ("L", "R") else i, []).append(i)
    breast = np.empty(len(patients), dtype=np.int64)
    cc, mlo, unit_breast = [], [], []
    for b, images in enumerate(members.values()):
        breast[images] = b
        ccs = [i for i in images if kinds[i] == "CC"]
        mlos = [i for i in images if kinds[i] == "MLO"]
        paired = min(len(ccs), len(mlos))
        units = [
            *zip(ccs[:paired], mlos[:paired]),
            *((i, NO_IMAGE) for i in ccs[paired:]),
            *((NO_IMAGE, i) for i in images if kinds[i] != "CC" and i not in mlos[:paired]),
        ]
        for c, m in units:
            cc.append(c)
            mlo.append(m)
            unit_breast.append(b)
    return ViewPairs(
        np.asarray(cc, dtype=np.int64), np.asarray(mlo, dtype=np.int64), np.asarray(unit_breast, dtype=np.int64), breast
    )


def partner_index(patients: Sequence, lateralities: Sequence, views: Sequence) -> np.ndarray:
    """``(N,)`` each image's partner, the other view of the same breast that it pairs with
    (:func:`view_pairs`), :data:`NO_IMAGE` (-1) for an image scored from its one view."""
    return view_pairs(patients, lateralities, views).partners()


def check_breasts_in_one_fold(fold_of: np.ndarray, patients: Sequence, lateralities: Sequence) -> None:
    """Raise a one-line DataError when a breast has images in two folds: a view-fused classifier
    pairs a breast's views within the images of one fold."""
    seen: dict[tuple[str, str], int] = {}
    for fold, patient, side in zip(np.asarray(fold_of), _texts(patients, upper=False), _texts(lateralities)):
        if side in ("L", "R") and seen.setdefault((patient, side), int(fold)) != int(fold):
            raise DataError(
                f"breast {patient} {side} has images in folds {seen[(patient, side)]} and {fold}; "
                f"a view-fused transfer pairs a breast's views within one fold (use --split patient)"
            )


def _texts(values: Sequence, upper: bool = True) -> list[str]:
    """Values as stripped strings, upper-case with ``upper`` (a missing value, None or NaN, as ``""``)."""
    texts = ["" if v is None or (np.ndim(v) == 0 and pd.isna(v)) else str(v).strip() for v in values]
    return [t.upper() for t in texts] if upper else texts


def table_view_pairs(samples: pd.DataFrame) -> ViewPairs:
    """:func:`view_pairs` of a sample table's rows (its ``patient_id``, ``laterality``, ``view``)."""
    return view_pairs(samples["patient_id"].tolist(), samples["laterality"].tolist(), samples["view"].tolist())
