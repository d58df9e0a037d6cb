"""Masked-image self-distillation on a ViT: the machinery iBOT (Zhou et al. 2022) and DINOv2 (Oquab et al. 2023) share.

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, "iBOT: Image BERT Pre-Training with Online Tokenizer",
ICLR 2022; Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024.
DINO's multi-crop self-distillation of the [CLS] token (two global views and ``local_crops``
smaller local ones; the teacher, a momentum copy of the student, sees the global views only) plus
a masked-patch-token self-distillation: blocks of each global view's patches are replaced by a
learned mask token in the student's input, and the student's outputs at those patches match the
teacher's outputs at the same patches of the unmasked view (the teacher is the online tokenizer).
Both losses are cross-entropies between the teacher's centred, sharpened softmax
(``teacher_temp``) and the student's softmax (``student_temp``), each with its own moving centre
(``center_momentum``): lightly's ``DINOLoss`` over the view pairs and ``IBOTPatchLoss`` over the
masked patches (averaged per image over its masked patches, then over the images). The task files
(:mod:`ssl_bench.pretext.ibot`, :mod:`ssl_bench.pretext.dinov2`) add up their losses from
:meth:`MaskedSelfDistillation.distillation_losses`.

Wired as lightly's ``benchmarks/imagenet/vitb16/ibot.py`` and ``examples/pytorch/dinov2.py``: the
student is the downstream timm ViT through lightly's ``MaskedVisionTransformerTIMM`` (as MAE's
encoder, :class:`~ssl_bench.pretext.vit.RectangularMaskedViT`; ``encode(x, mask=...)`` puts the
mask token at the hidden patches), the heads lightly's ``DINOProjectionHead`` on the [CLS] token
and on the masked patch tokens (one head for both, or ``separate_heads``), the mask lightly's
``random_block_mask`` (DINOv2's: half the images, ``mask_probability``, get blocks of at least 4
patches hidden until a fraction in ``mask_ratio_min``..``mask_ratio_max`` of them is, 0.1..0.5 as
both papers; drawn in ``prepare`` for the whole batch,
:func:`~ssl_bench.pretext.vit.draw_block_mask`). A masked task runs the backbone itself, so the
teacher is one module, :class:`MaskedDistillationTeacher`, with its own copy of the ViT and the
heads (``copy_teacher_head``), kept and moved towards the student by
:class:`~ssl_bench.models.pretext_model.PretextModel` (momentum ``momentum`` -> 1, cosine); it gets
the global views and the mask (``teacher_views``). Losses with in-place centres and the head:
:mod:`ssl_bench.pretext.distillation` (shared with DINO).

Choices for 1-channel mammograms and small sets, as DINO's here (:mod:`ssl_bench.pretext.dino`):
the views of :mod:`ssl_bench.pretext.views`; global crops of ``crop_scale``..1 (0.4), local ones
of ``local_scale``..``crop_scale`` (0.05) at ``local_size`` (0.5) of the height and width, 4 of
them (the papers' 10 and 8); a local view goes through the ViT at its own size, the position
embedding resampled to its patch grid (a local view of a 768x384 run is 384x192, 24x12 patches
of 16; at the smoke profile's 64x32 it is 32x16, 2x1 patches). ``out_dim = 1024`` prototypes,
``hidden_dim = 1024``, ``bottleneck_dim = 128`` (the papers' 8192 (iBOT) / 65536 (DINOv2), 2048
and 256 are for ImageNet); the last layer's norm fixed at 1 (lightly's default, DINO's here;
both papers let it learn); ``teacher_temp = 0.04`` throughout (the papers warm it to 0.07 over 30
epochs, more than a pretext stage here lasts); ``momentum = 0.99`` (the papers' 0.996 / 0.992 are
for hundreds of epochs). The ViT needs a class token and an image size that is a multiple of its
patch size (one line otherwise).
"""
from __future__ import annotations

import copy
from typing import ClassVar, NamedTuple, cast

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import ConfigError
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_momentum
from .distillation import InPlaceCenterDINOLoss, InPlaceCenterIBOTPatchLoss, dino_head
from .views import MammoViews, view_options, view_pair
from .vit import RectangularMaskedViT, as_vit, check_vit_name, draw_block_mask, patch_grid


class DistillationOutputs(NamedTuple):
    """What the student and the teacher returned, by name (:meth:`MaskedSelfDistillation.split`)."""

    #: the student's DINO head on the [CLS] token of each view, 2 global then the local ones, ``(B, K)``
    student_cls: list[torch.Tensor]
    #: the student's patch head on the masked patch tokens of the global views, ``(M, K)``
    student_patch: torch.Tensor
    #: the student's [CLS] tokens of the 2 global views (the ViT's, before the head), ``(2B, D)``
    cls_tokens: torch.Tensor
    #: the global views' patch mask, ``(2B, rows, columns)`` bool, True for a masked patch
    mask: torch.Tensor
    #: the teacher's DINO head on the [CLS] token of the 2 global views, ``(B, K)`` each
    teacher_cls: list[torch.Tensor]
    #: the teacher's patch head on the same patches of the unmasked global views, ``(M, K)``
    teacher_patch: torch.Tensor


class MaskedDistillationHead(nn.Module):
    """The student: the ViT (shared, not copied) with a mask token, the DINO head and the patch
    head.

    ``forward(*views, mask)`` takes the 2 global views ``(B, 1, H, W)``, the local ones (any one
    size) and the global views' patch mask ``(2B, rows, columns)`` bool (as
    :meth:`MaskedSelfDistillation.prepare` draws it; without one, it draws one) and returns, in
    order, the DINO head's output on each view's [CLS] token, the patch head's on the global
    views' masked patch tokens (rows in mask order), the global views' [CLS] tokens and the mask.

    Args:
        vit: the downstream timm ViT, built for the run's image size.
        task: the pretext task's name, for the messages.
        n_views: global and local views per image (2 + local crops).
        dims: ``(hidden_dim, bottleneck_dim, out_dim)`` of the heads.
        separate_heads: a patch head of its own (DINOv2) rather than the DINO head (iBOT).
        masking: ``(mask_probability, mask_ratio_min, mask_ratio_max)`` of a mask it draws.
    """

    def __init__(self, vit: VisionTransformer, task: str, n_views: int, dims: tuple[int, int, int],
                 separate_heads: bool, masking: tuple[float, float, float]):
        super().__init__()
        if vit.cls_token is None:
            raise ConfigError(f"pretext {task} needs a ViT with a class token; got one without")
        # the ViT keeps timm's initialisation and its learned position embedding (MAE's reasons)
        self.encoder = RectangularMaskedViT(vit, weight_initialization="skip", pos_embed_initialization="skip")
        self.patch_size, self.grid = patch_grid(task, vit)
        self.image_size = tuple(int(s) for s in vit.patch_embed.img_size)
        self.prefix = int(vit.num_prefix_tokens)
        self.task, self.n_views, self.dims = task, int(n_views), dims
        self.separate_heads, self.masking = bool(separate_heads), masking
        self.dino_head = dino_head(vit.embed_dim, *dims)
        self.ibot_head = dino_head(vit.embed_dim, *dims) if separate_heads else None

    def patch_head(self) -> nn.Module:
        """The head on the masked patch tokens: its own, or the DINO head."""
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def token_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """``(N, rows, columns)`` patch mask -> ``(N, prefix + rows * columns)`` token mask (the
        prefix tokens never masked)."""
        flat = mask.flatten(1)
        return torch.cat([flat.new_zeros(flat.shape[0], self.prefix), flat], dim=1)

    def check_mask(self, mask: torch.Tensor, n: int) -> None:
        """``ValueError`` unless ``mask`` is ``(n, rows, columns)`` bool."""
        if mask.dtype != torch.bool or tuple(mask.shape) != (n, *self.grid):
            raise ValueError(f"{self.task}'s mask must be ({n}, {self.grid[0]}, {self.grid[1]}) bool, "
                             f"got {tuple(mask.shape)} {mask.dtype}")

    def check_globals(self, views: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The 2 global views as one batch, checked against the ViT's image size."""
        if len(views) < 2 or any(tuple(v.shape[-2:]) != self.image_size for v in views[:2]):
            raise ValueError(f"{self.task}'s ViT was built for {self.image_size} global views, got "
                             f"{[tuple(v.shape[-2:]) for v in views[:2]]}")
        return torch.cat(views[:2])

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        views, rest = inputs[: self.n_views], inputs[self.n_views :]
        global_views = self.check_globals(views)
        if rest:
            mask = rest[0]
        else:
            mask = draw_block_mask(global_views.shape[0], self.grid, self.masking[0], self.masking[1:],
                                   device=global_views.device)
        self.check_mask(mask, global_views.shape[0])
        tokens = self.encoder.encode(global_views, mask=self.token_mask(mask))
        cls_tokens = tokens[:, 0]
        outputs = list(self.dino_head(cls_tokens).chunk(2))
        local = views[2:]
        if local:
            local_cls = self.encoder.encode(torch.cat(local))[:, 0]
            outputs += list(self.dino_head(local_cls).chunk(len(local)))
        patch_out = self.patch_head()(tokens[self.token_mask(mask)])
        return [*outputs, patch_out, cls_tokens, mask]

    def teacher_copy(self) -> MaskedDistillationTeacher:
        """The teacher at the start: a :class:`MaskedDistillationTeacher` on a copy of the ViT with
        this head's weights (built anew: a weight-normalised layer cannot be deep-copied)."""
        vit = cast(VisionTransformer, copy.deepcopy(self.encoder.vit))
        teacher = MaskedDistillationTeacher(vit, self.task, self.n_views, self.dims, self.separate_heads,
                                            self.masking)
        teacher.load_state_dict(self.state_dict())
        return teacher


class MaskedDistillationTeacher(MaskedDistillationHead):
    """The teacher: the student's modules (a copy; the same parameters in the same order, so the
    momentum update pairs them), run on the unmasked global views.

    ``forward(global_1, global_2, mask)`` returns the DINO head's output on each global view's
    [CLS] token and the patch head's on the patch tokens the mask marks (the student's rows).
    """

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if len(inputs) != 3:
            raise ValueError(f"{self.task}'s teacher takes the 2 global views and their mask, got {len(inputs)} inputs")
        global_views = self.check_globals(inputs[:2])
        mask = inputs[2]
        self.check_mask(mask, global_views.shape[0])
        tokens = self.encoder.encode(global_views)
        return [*self.dino_head(tokens[:, 0]).chunk(2), self.patch_head()(tokens[self.token_mask(mask)])]


class MaskedSelfDistillation(PretextTask):
    """DINO's [CLS] self-distillation plus iBOT's masked-patch self-distillation, on a ViT (the
    machinery of iBOT and DINOv2; see the module docstring).

    Args:
        local_crops: local views per image besides the two global ones (0: global views only).
        local_scale: smallest area fraction of a local view's crop (local crops cover
            local_scale..crop_scale; below crop_scale).
        local_size: a local view's height and width as a fraction of the image's.
        momentum: the teacher's momentum at the start of the stage; it rises to 1 on a cosine
            schedule over the stage's steps.
        teacher_temp: softmax temperature of the teacher's (centred, sharpened) outputs.
        student_temp: softmax temperature of the student's outputs.
        center_momentum: momentum of the moving averages that centre the teacher's outputs.
        hidden_dim: hidden width of the heads' MLP.
        bottleneck_dim: width of the heads' L2-normalised bottleneck.
        out_dim: number of prototypes (the heads' output width).
        separate_heads: a head of its own for the patch tokens (else the [CLS] token's DINO head).
        mask_probability: fraction of the global views whose patches are masked at all.
        mask_ratio_min: smallest fraction of a masked view's patches hidden.
        mask_ratio_max: largest fraction of a masked view's patches hidden.
        crop_scale: smallest area fraction of a global view's crop (global crops cover
            crop_scale..1 of the image).
    """

    kind = "masked"
    uses_teacher = True
    #: the registered task's name (the registry sets it), for the messages
    name: ClassVar[str]

    def __init__(
        self,
        local_crops: int,
        local_scale: float,
        local_size: float,
        momentum: float,
        teacher_temp: float,
        student_temp: float,
        center_momentum: float,
        hidden_dim: int,
        bottleneck_dim: int,
        out_dim: int,
        separate_heads: bool,
        mask_probability: float,
        mask_ratio_min: float,
        mask_ratio_max: float,
        crop_scale: float,
        blur_prob: float,
        jitter: float,
        noise_std: float,
        vflip_prob: float,
    ):
        check_dims(hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, out_dim=out_dim)
        if int(local_crops) != local_crops or local_crops < 0:
            raise ValueError(f"local_crops must be an integer >= 0, got {local_crops}")
        if not 0 < local_scale < crop_scale:
            raise ValueError(f"local_scale must be in (0, crop_scale={crop_scale}), got {local_scale}")
        for name, value in (("teacher_temp", teacher_temp), ("student_temp", student_temp)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0 <= center_momentum <= 1:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        if not 0 <= mask_probability <= 1:
            raise ValueError(f"mask_probability must be in [0, 1], got {mask_probability}")
        if not 0 <= mask_ratio_min <= mask_ratio_max <= 1:
            raise ValueError(f"mask_ratio_min and mask_ratio_max must satisfy 0 <= min <= max <= 1, "
                             f"got {mask_ratio_min} and {mask_ratio_max}")
        self.local_crops = int(local_crops)
        self.dims = (int(hidden_dim), int(bottleneck_dim), int(out_dim))
        self.separate_heads = bool(separate_heads)
        self.masking = (float(mask_probability), float(mask_ratio_min), float(mask_ratio_max))
        self.momentum_start = check_momentum(momentum)
        self.momentum_end = 1.0
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.local_views = MammoViews(crop_scale=(float(local_scale), float(crop_scale)), vflip_prob=vflip_prob,
                                      jitter=jitter, blur_prob=blur_prob, noise_std=noise_std, out_scale=local_size)
        self.dino_criterion = InPlaceCenterDINOLoss(
            output_dim=self.dims[2], warmup_teacher_temp=float(teacher_temp), teacher_temp=float(teacher_temp),
            student_temp=float(student_temp), center_momentum=float(center_momentum))
        self.patch_criterion = InPlaceCenterIBOTPatchLoss(
            output_dim=self.dims[2], teacher_temp=float(teacher_temp), student_temp=float(student_temp),
            center_momentum=float(center_momentum))
        self.grid: tuple[int, int] | None = None  # the ViT's patch grid, known once the head is built

    @property
    def n_views(self) -> int:
        """Views per image: the 2 global ones and the local ones."""
        return 2 + self.local_crops

    def check_backbone(self, backbone: str) -> None:
        check_vit_name(self.name, backbone)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        """The 2 global and the local views, then the global views' patch mask, drawn here for the
        whole batch (so that a data-parallel worker keeps its share of one process's masks). Before
        a head is built the patch grid is unknown: the views alone, and the head draws the mask
        (the contract checker's first call; a training step always has a head)."""
        views = view_pair(self.views, images)
        with torch.no_grad():
            views += [self.local_views(images) for _ in range(self.local_crops)]
        if self.grid is not None:
            views.append(draw_block_mask(2 * images.shape[0], self.grid, self.masking[0], self.masking[1:],
                                         device=images.device))
        return PretextBatch(inputs=views, targets=None)

    def build_masked_head(self, backbone: nn.Module) -> nn.Module:
        head = MaskedDistillationHead(as_vit(self.name, backbone), self.name, self.n_views, self.dims,
                                      self.separate_heads, self.masking)
        self.grid = head.grid
        return head

    def copy_teacher_head(self, head: nn.Module) -> nn.Module:
        return cast(MaskedDistillationHead, head).teacher_copy()

    def teacher_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The 2 global views and their mask (the teacher sees them unmasked)."""
        return views[:2] + views[self.n_views :]

    def split(self, outputs: list[torch.Tensor]) -> DistillationOutputs:
        """``outputs`` (the student's, then the teacher's) by name, in fp32 (the mask bool).

        Args:
            outputs: what :class:`MaskedDistillationHead` and :class:`MaskedDistillationTeacher`
                returned, in that order.

        Returns:
            The parts.

        Raises:
            ValueError: not the outputs of this task's student and teacher.
        """
        n = self.n_views
        if len(outputs) != n + 6 or any(o.dim() != 2 for o in outputs[: n + 2]) or outputs[n + 2].dim() != 3:
            raise ValueError(f"{self.name} expects the student's {n} [CLS] outputs, masked patch outputs, [CLS] "
                             f"tokens and mask, then the teacher's 2 [CLS] and masked patch outputs; got "
                             f"{[tuple(o.shape) for o in outputs]}")
        student, teacher = outputs[: n + 3], outputs[n + 3 :]
        return DistillationOutputs(
            student_cls=[o.float() for o in student[:n]], student_patch=student[n].float(),
            cls_tokens=student[n + 1].float(), mask=student[n + 2].bool(),
            teacher_cls=[o.float().detach() for o in teacher[:2]], teacher_patch=teacher[2].float().detach())

    def distillation_losses(self, parts: DistillationOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """DINO's loss on the [CLS] outputs (every teacher view against every other student view)
        and iBOT's on the masked patches; each updates its centre.

        Args:
            parts: the outputs, :meth:`split`.

        Returns:
            ``(cls_loss, patch_loss)``, fp32 scalars.
        """
        device = parts.student_patch.device
        if self.dino_criterion.center.device != device:
            self.dino_criterion.to(device)  # the centres follow the network (once)
            self.patch_criterion.to(device)
        cls_loss = self.dino_criterion(teacher_out=parts.teacher_cls, student_out=parts.student_cls)
        patch_loss = self.patch_criterion(teacher_out=parts.teacher_patch, student_out=parts.student_patch,
                                          mask=parts.mask)
        return cls_loss, patch_loss
