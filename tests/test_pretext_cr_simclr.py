"""Context restoration (patch swaps) and SimCLR (views, NT-Xent wiring, head)."""
from __future__ import annotations

import math

import pytest
import torch

from ssl_bench.pretext.base import PretextBatch
from ssl_bench.pretext.context_restoration import (
    ContextRestoration,
    patch_size,
    sample_patch_pairs,
    swap_patches,
)
from ssl_bench.pretext.simclr import MammoViews, SimCLR, resized_crop, sample_crop_boxes
from ssl_bench.registry import PRETEXTS


def unique_images(b: int, h: int, w: int) -> torch.Tensor:
    """Images whose pixels are all distinct (also across images)."""
    return torch.arange(b * h * w, dtype=torch.float32).view(b, 1, h, w)


def reference_swaps(images, swaps, patch, seed):
    """Python re-simulation of swap_patches with the same random draws."""
    b, _, h, w = images.shape
    gen = torch.Generator().manual_seed(seed)
    out = images.clone()
    pairs = []
    for _ in range(swaps):
        y1, x1, y2, x2 = sample_patch_pairs(b, h, w, patch, gen)
        pairs.append((y1, x1, y2, x2))
        for i in range(b):
            a = out[i, :, y1[i] : y1[i] + patch, x1[i] : x1[i] + patch].clone()
            out[i, :, y1[i] : y1[i] + patch, x1[i] : x1[i] + patch] = out[
                i, :, y2[i] : y2[i] + patch, x2[i] : x2[i] + patch
            ]
            out[i, :, y2[i] : y2[i] + patch, x2[i] : x2[i] + patch] = a
    return out, pairs


def test_registered():
    assert PRETEXTS.get("context_restoration") is ContextRestoration
    assert PRETEXTS.get("simclr") is SimCLR


# ---------------------------------------------------------------- context restoration


def test_single_swap_exchanges_the_two_patches():
    img = unique_images(3, 23, 17)  # odd sizes
    p = 4
    out = swap_patches(img, 1, p, torch.Generator().manual_seed(0))
    (y1, x1, y2, x2) = sample_patch_pairs(3, 23, 17, p, torch.Generator().manual_seed(0))
    for i in range(3):
        a = (slice(y1[i], y1[i] + p), slice(x1[i], x1[i] + p))
        b = (slice(y2[i], y2[i] + p), slice(x2[i], x2[i] + p))
        assert torch.equal(out[i, 0][a], img[i, 0][b])
        assert torch.equal(out[i, 0][b], img[i, 0][a])
        changed = out[i] != img[i]
        assert int(changed.sum()) == 2 * p * p  # nothing else moved
    # positions are drawn per image
    assert len({(int(a), int(b)) for a, b in zip(y1, x1)}) > 1


@pytest.mark.parametrize("swaps", [1, 3, 20])
def test_swaps_match_a_python_reference_with_T_swaps(swaps):
    img = unique_images(4, 31, 19)
    out = swap_patches(img, swaps, 3, torch.Generator().manual_seed(7))
    ref, pairs = reference_swaps(img, swaps, 3, seed=7)
    assert len(pairs) == swaps
    assert torch.equal(out, ref)
    assert int((out != img).flatten(1).sum(1).max()) <= swaps * 2 * 9


def test_zero_swaps_is_identity_copy():
    img = torch.rand(2, 1, 16, 8)
    out = swap_patches(img, 0, 3)
    assert torch.equal(out, img) and out.data_ptr() != img.data_ptr()


def test_content_is_a_permutation_per_image():
    img = torch.rand(5, 1, 37, 21)
    out = swap_patches(img, 25, 5, torch.Generator().manual_seed(1))
    assert not torch.equal(out, img)
    assert torch.equal(out.flatten(1).sort(1).values, img.flatten(1).sort(1).values)
    multi = torch.rand(2, 3, 20, 12)  # channels move together
    out = swap_patches(multi, 4, 3, torch.Generator().manual_seed(2))
    key = multi[:, 0].flatten(1)
    perm = key.argsort(1)
    moved = out[:, 0].flatten(1).argsort(1)
    for c in range(3):
        assert torch.equal(
            multi[:, c].flatten(1).gather(1, perm), out[:, c].flatten(1).gather(1, moved)
        )


@pytest.mark.parametrize("h,w,p", [(64, 32, 2), (9, 7, 4), (5, 40, 5), (40, 5, 3), (8, 8, 4)])
def test_patch_pairs_never_overlap_and_stay_inside(h, w, p):
    gen = torch.Generator().manual_seed(3)
    y1, x1, y2, x2 = sample_patch_pairs(4000, h, w, p, gen)
    for y, x in ((y1, x1), (y2, x2)):
        assert int(y.min()) >= 0 and int(y.max()) <= h - p
        assert int(x.min()) >= 0 and int(x.max()) <= w - p
    separated = ((y1 - y2).abs() >= p) | ((x1 - x2).abs() >= p)
    assert bool(separated.all())


def test_patch_pairs_cover_the_image():
    y1, x1, y2, x2 = sample_patch_pairs(20000, 12, 10, 2, torch.Generator().manual_seed(4))
    assert set(torch.cat([y1, y2]).tolist()) == set(range(11))
    assert set(torch.cat([x1, x2]).tolist()) == set(range(9))


def test_impossible_patch_is_rejected():
    with pytest.raises(ValueError, match="do not fit"):
        sample_patch_pairs(1, 10, 10, 6)


def test_patch_size_scales_with_the_image():
    assert patch_size(768, 384, 0.07) == 27
    assert patch_size(128, 64, 0.07) == 4
    assert patch_size(64, 32, 0.07, min_patch=2) == 2
    assert patch_size(16, 16, 0.5, min_patch=12) == 8  # two must fit


def test_context_restoration_prepare_and_loss():
    task = ContextRestoration(swaps=5, patch_frac=0.1)
    assert task.kind == "image" and not task.uses_labels
    images = torch.rand(3, 1, 64, 32)
    batch = task.prepare(images, torch.tensor([0, 1, 0]))
    assert isinstance(batch, PretextBatch) and len(batch.inputs) == 1
    assert batch.targets is images
    assert batch.inputs[0].shape == images.shape and not torch.equal(batch.inputs[0], images)
    assert float(task.loss([images.clone()], batch.targets)) == 0.0
    out = images.clone()
    out[0, 0, 0, 0] += 2.0
    out[2, 0, 5, 7] -= 1.0
    expected = (2.0**2 + 1.0**2) / images.numel()
    assert float(task.loss([out.half()], images)) == pytest.approx(expected, rel=1e-2)
    assert task.loss([out.bfloat16()], images).dtype == torch.float32
    with pytest.raises(ValueError):
        task.loss([images[:, :, :10]], images)
    with pytest.raises(ValueError):
        ContextRestoration(swaps=-1)


# ---------------------------------------------------------------- SimCLR loss wiring


def nt_xent_reference(z0, z1, t):
    """NT-Xent written out: 2B anchors, positive = other view, negatives = all but self."""
    z = torch.nn.functional.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    sim = z @ z.T / t
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        total += -(sim[i, pos] - torch.logsumexp(sim[i, others], 0))
    return total / (2 * n)


def test_nt_xent_two_by_two_by_hand():
    task = SimCLR(temperature=0.5)
    z = torch.eye(2)
    t = 0.5
    matched = math.log(1 + 2 * math.exp(-1 / t))  # positive 1/t, negatives 0 and 0
    shuffled = math.log(2 + math.exp(1 / t))  # positive 0, negatives 1/t and 0
    assert float(task.loss([z, z], None)) == pytest.approx(matched, rel=1e-5)
    assert float(task.loss([z, z.flip(0)], None)) == pytest.approx(shuffled, rel=1e-5)


def test_two_views_of_one_image_are_the_positives():
    torch.manual_seed(0)
    task = SimCLR(temperature=0.2)
    z = torch.randn(8, 16)
    perm = torch.roll(torch.arange(8), 1)
    matched = task.loss([z, z], None)
    shuffled = task.loss([z, z[perm]], None)
    assert float(matched) < float(shuffled)
    noisy = z + 0.1 * torch.randn_like(z)
    assert float(task.loss([z, noisy], None)) == pytest.approx(
        float(nt_xent_reference(z, noisy, 0.2)), rel=1e-5
    )
    assert task.loss([z.half(), noisy.half()], None).dtype == torch.float32
    with pytest.raises(ValueError):
        task.loss([z], None)


def test_projection_head_shape():
    task = SimCLR(hidden_dim=32, out_dim=8)
    assert task.kind == "embedding"
    head = task.build_embedding_head(64)
    assert head(torch.randn(5, 64)).shape == (5, 8)


# ---------------------------------------------------------------- SimCLR views


def breast_like(b=4, h=64, w=32):
    """Tissue on the left, darker towards the right, background beyond; vertically asymmetric."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = ((1 - xx) * (0.6 + 0.4 * yy)) * (xx < 0.7)
    return img.expand(b, 1, h, w).contiguous()


def test_views_keep_shape_dtype_range_and_differ():
    torch.manual_seed(0)
    task = SimCLR()
    images = breast_like()
    batch = task.prepare(images, torch.zeros(4))
    assert batch.targets is None and len(batch.inputs) == 2
    v1, v2 = batch.inputs
    for v in (v1, v2):
        assert v.shape == images.shape and v.dtype == images.dtype
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
        assert not torch.equal(v, images)
    assert not torch.equal(v1, v2)
    # different images of the batch get different parameters
    assert not torch.equal(v1[0], v1[1])
    half = MammoViews()(images.half())
    assert half.dtype == torch.float16


def test_views_flip_vertically_but_never_horizontally():
    images = breast_like(b=64)
    views = MammoViews(
        crop_scale=1.0, ratio=(1.0, 1.0), jitter=0.0, blur_prob=0.0, noise_std=0.0
    )
    out = views(images, torch.Generator().manual_seed(0))
    same = (out - images).abs().flatten(1).amax(1) < 1e-5
    vflipped = (out - images.flip(2)).abs().flatten(1).amax(1) < 1e-5
    hflipped = (out - images.flip(3)).abs().flatten(1).amax(1) < 1e-5
    assert bool((same | vflipped).all())  # full-size crop: only identity or vertical flip
    assert 10 < int(vflipped.sum()) < 54
    assert not bool(hflipped.any())
    # with crops: the tissue side stays on the left
    crops = MammoViews()(images, torch.Generator().manual_seed(1))
    left, right = crops[..., :16].mean((1, 2, 3)), crops[..., 16:].mean((1, 2, 3))
    assert bool((left > right).all())


def test_crop_boxes_inside_image_centred_on_tissue():
    h, w = 64, 32
    images = torch.zeros(200, 1, h, w)
    images[:, :, 40:56, 2:10] = 0.8  # a small tissue region
    boxes = sample_crop_boxes(images, (0.4, 1.0), generator=torch.Generator().manual_seed(0))
    y0, x0, ch, cw = boxes.unbind(1)
    assert bool((y0 >= 0).all() and (x0 >= 0).all())
    assert bool((y0 + ch <= h + 1e-4).all() and (x0 + cw <= w + 1e-4).all())
    area = ch * cw / (h * w)
    assert float(area.min()) >= 0.4 - 1e-6 and float(area.max()) <= 1.0 + 1e-6
    # every crop contains tissue
    for i in range(len(boxes)):
        ys, xs = int(y0[i]), int(x0[i])
        crop = images[i, 0, ys : ys + int(ch[i]), xs : xs + int(cw[i])]
        assert float(crop.max()) > 0
    # on a blank image crops still come out (centre anywhere)
    blank = sample_crop_boxes(torch.zeros(3, 1, h, w))
    assert blank.shape == (3, 4)


def test_resized_crop_full_box_is_exact():
    images = torch.rand(2, 1, 13, 7)
    full = torch.tensor([[0.0, 0.0, 13.0, 7.0]] * 2)
    assert torch.allclose(resized_crop(images, full), images, atol=1e-6)
    flip = torch.tensor([True, False])
    out = resized_crop(images, full, flip)
    assert torch.allclose(out[0], images[0].flip(1), atol=1e-6)


def test_invalid_view_options():
    with pytest.raises(ValueError):
        MammoViews(crop_scale=0.0)
    with pytest.raises(ValueError):
        MammoViews(crop_scale=(0.9, 0.5))
    with pytest.raises(ValueError):
        SimCLR(temperature=0)
