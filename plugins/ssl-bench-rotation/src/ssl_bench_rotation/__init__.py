"""Rotation prediction: an ssl-bench pretext task shipped as a plugin (one file, one decorator).

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image
Rotations", ICLR 2018. Each image is turned by one of ``R`` rotations and the network classifies
which one (``R``-way cross-entropy); to do so it has to find where the anatomy points. Kind
``"embedding"``: the backbone's pooled features go through :meth:`build_embedding_head`, a linear
classifier over the rotation classes (an MLP when ``hidden_dim > 0``).

Shape. A quarter turn of a 2:1 portrait mammogram (768x384) is a 1:2 landscape image. With
``rotations=4`` (0/90/180/270 degrees, the paper's choice) every view is built the same way: a
square of side ``min(H, W)`` is cut from the image (``crop="random"``: at a random position along
the long axis, new for each image and batch; ``"center"``: the middle), turned with
``torch.rot90`` (exact, no interpolation) and placed in the middle of a black ``H x W`` frame.
The 0-degree class gets the same crop and frame, so the frame carries no information about the
class; black is a mammogram's background anyway, and nothing is resized, so tissue keeps its
aspect ratio (stretching the square back to 2:1 would distort 0/180 and 90/270 views in different
directions, a shortcut). With ``rotations=2`` (0/180 degrees) the whole image is used, since a
half turn keeps the shape.

Batches. ``all_rotations=True`` (the paper's best setting) feeds every image in all ``R``
rotations: ``R`` views of ``B`` images, targets ``[0]*B + [1]*B + ...`` in the order the
pretext model concatenates the views. ``all_rotations=False`` gives one view with one random
rotation per image. Labels ``c`` mean ``c * 360 / R`` degrees counter-clockwise
(``torch.rot90(x, k, dims=(-2, -1))`` with ``k = c * 4 / R`` quarter turns).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.pretext.base import PretextBatch, PretextTask
from ssl_bench.registry import PRETEXTS

__version__ = "0.1.0"
__all__ = ["RotationPrediction", "rotate", "square_crop", "place_centered"]


def rotate(images: torch.Tensor, quarter_turns: torch.Tensor | int) -> torch.Tensor:
    """Turn each image of ``images`` ``(B, C, H, W)`` counter-clockwise by its number of quarter
    turns: an ``int`` for all of them, or a ``(B,)`` tensor, one per image. Odd turns need square
    images; a half turn keeps any shape."""
    square = images.shape[-1] == images.shape[-2]
    if isinstance(quarter_turns, int):
        if quarter_turns % 2 and not square:
            raise ValueError(f"a quarter turn needs square images, got {tuple(images.shape[-2:])}")
        return torch.rot90(images, quarter_turns % 4, dims=(-2, -1))
    k = quarter_turns.to(images.device).remainder(4).view(-1, 1, 1, 1)
    if not square and bool((k % 2 == 1).any()):
        raise ValueError(f"a quarter turn needs square images, got {tuple(images.shape[-2:])}")
    out = images
    for q in (1, 2, 3) if square else (2,):
        out = torch.where(k == q, torch.rot90(images, q, dims=(-2, -1)), out)
    return out


def square_crop(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The square of side ``min(H, W)`` of each image starting at ``offsets[i]`` along the long
    axis: ``(B, C, S, S)``."""
    b, c, h, w = images.shape
    s = min(h, w)
    if h == w:
        return images
    index = offsets.to(images.device).view(b, 1) + torch.arange(s, device=images.device)
    if h > w:  # portrait: choose rows
        return images.gather(2, index.view(b, 1, s, 1).expand(b, c, s, w))
    return images.gather(3, index.view(b, 1, 1, s).expand(b, c, h, s))


def place_centered(views: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each view ``(B, C, h, w)`` in the middle of a black (zero) frame of ``size`` ``(H, W)``
    (``H >= h``, ``W >= w``; views of that size are returned as they are)."""
    h, w = size
    vh, vw = views.shape[-2:]
    if (vh, vw) == (h, w):
        return views
    if vh > h or vw > w:
        raise ValueError(f"a {vh}x{vw} view does not fit a {h}x{w} frame")
    top, left = (h - vh) // 2, (w - vw) // 2
    return F.pad(views, (left, w - vw - left, top, h - vh - top))


@PRETEXTS.register("rotation")
class RotationPrediction(PretextTask):
    """Rotation prediction (Gidaris et al., ICLR 2018): classify the 0/90/180/270-degree turn of
    the image; cross-entropy.

    Options: ``rotations`` 4 (0/90/180/270 degrees on a square cut of the image, see the module
    docstring) or 2 (0/180 degrees on the whole image); ``all_rotations``: every image in all its
    rotations per batch (the paper's setting) or one random rotation each; ``crop``: ``"random"``
    or ``"center"`` position of the square (4 rotations only); ``hidden_dim``: 0 for a linear
    classifier on the pooled features, else the width of a one-hidden-layer MLP.
    """

    kind = "embedding"

    def __init__(
        self,
        rotations: int = 4,
        all_rotations: bool = True,
        crop: str = "random",
        hidden_dim: int = 0,
    ):
        if rotations not in (2, 4):
            raise ValueError(f"rotations must be 4 (0/90/180/270) or 2 (0/180), got {rotations}")
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if int(hidden_dim) != hidden_dim or hidden_dim < 0:
            raise ValueError(f"hidden_dim must be an integer >= 0, got {hidden_dim}")
        self.rotations = int(rotations)
        self.all_rotations = bool(all_rotations)
        self.crop = crop
        self.hidden_dim = int(hidden_dim)

    @property
    def quarter_turns(self) -> torch.Tensor:
        """Quarter turns of each class: ``[0, 1, 2, 3]`` or ``[0, 2]``."""
        return torch.arange(self.rotations) * (4 // self.rotations)

    def unrotated(self, images: torch.Tensor) -> torch.Tensor:
        """What gets rotated: a square cut of each image (``(B, C, S, S)``, ``S = min(H, W)``)
        for 4 rotations, the images themselves for 2."""
        b, _, h, w = images.shape
        if self.rotations == 2 or h == w:
            return images
        room = abs(h - w)
        if self.crop == "random":
            offsets = torch.randint(0, room + 1, (b,), device=images.device)
        else:
            offsets = torch.full((b,), room // 2, device=images.device, dtype=torch.long)
        return square_crop(images, offsets)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        b, dev, size = images.shape[0], images.device, tuple(images.shape[-2:])
        step = 4 // self.rotations
        with torch.no_grad():
            base = self.unrotated(images)
            if self.all_rotations:
                inputs = [place_centered(rotate(base, c * step), size) for c in range(self.rotations)]
                targets = torch.arange(self.rotations, device=dev).repeat_interleave(b)
            else:
                targets = torch.randint(0, self.rotations, (b,), device=dev)
                inputs = [place_centered(rotate(base, targets * step), size)]
        return PretextBatch(inputs=inputs, targets=targets)

    def loss(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = torch.cat(list(outputs)).float()
        if logits.dim() != 2 or logits.shape != (targets.numel(), self.rotations):
            shapes = [tuple(o.shape) for o in outputs]
            raise ValueError(
                f"rotation expects (B, {self.rotations}) logits per view, "
                f"{targets.numel()} rows in all; got {shapes}"
            )
        return F.cross_entropy(logits, targets.reshape(-1).long())

    def build_embedding_head(self, in_features: int) -> nn.Module:
        if self.hidden_dim == 0:
            return nn.Linear(in_features, self.rotations)
        return nn.Sequential(
            nn.Linear(in_features, self.hidden_dim),
            nn.BatchNorm1d(self.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden_dim, self.rotations),
        )
