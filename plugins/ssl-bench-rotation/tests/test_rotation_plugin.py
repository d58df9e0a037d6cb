"""Tests of the rotation-prediction plugin: the rotations themselves, labels agreeing with them,
the loss against a hand computation, the ssl-bench contract, and training with the finetune and
multitask transfers. Run from the repository root (``pytest``) or from this package's folder."""
from __future__ import annotations

import math
from importlib import metadata

import numpy as np
import pytest
import torch

rot = pytest.importorskip(
    "ssl_bench_rotation", reason="the rotation plugin is not installed (pip install -e plugins/ssl-bench-rotation)"
)
from ssl_bench.registry import PRETEXTS  # noqa: E402
from ssl_bench.testing import check_pretext, check_transfer  # noqa: E402

RotationPrediction = rot.RotationPrediction


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves
    yield
    torch.set_num_threads(threads)


def test_registered_from_the_entry_point():
    assert PRETEXTS.get("rotation") is RotationPrediction
    try:
        dist = metadata.distribution("ssl-bench-rotation")
    except metadata.PackageNotFoundError:
        pytest.skip("importable but not installed as a distribution: no origin to check")
    assert PRETEXTS.entry("rotation").origin == f"ssl-bench-rotation {dist.version}"
    assert RotationPrediction.kind == "embedding"


# ------------------------------------------------------------------ the rotations themselves
def test_quarter_turns_move_an_asymmetric_pattern_counter_clockwise():
    # 4x4 square with two marks on its top row: 1.0 at (0, 3), 0.5 at (0, 2). A counter-clockwise
    # quarter turn maps (r, c) -> (3 - c, r): the marks go to (0, 0) and (1, 0).
    sq = torch.zeros(1, 1, 4, 4)
    sq[0, 0, 0, 3], sq[0, 0, 0, 2] = 1.0, 0.5
    where = {
        0: {(0, 3): 1.0, (0, 2): 0.5},
        1: {(0, 0): 1.0, (1, 0): 0.5},
        2: {(3, 0): 1.0, (3, 1): 0.5},
        3: {(3, 3): 1.0, (2, 3): 0.5},
    }
    for k, marks in where.items():
        expected = torch.zeros(4, 4)
        for (r, c), v in marks.items():
            expected[r, c] = v
        assert torch.equal(rot.rotate(sq, k)[0, 0], expected), k
        assert torch.equal(rot.rotate(sq, torch.tensor([k]))[0, 0], expected), k


def test_four_rotations_of_a_portrait_image_keep_its_shape():
    # 8x4 portrait image, all values distinct: the centre square is rows 2..5, turned and framed.
    image = torch.arange(32, dtype=torch.float32).view(1, 1, 8, 4) + 1
    task = RotationPrediction(rotations=4, crop="center", all_rotations=True)
    batch = task.prepare(image, torch.zeros(1))
    square = image[0, 0, 2:6].numpy()
    assert len(batch.inputs) == 4
    for k, view in enumerate(batch.inputs):
        assert view.shape == image.shape and view.dtype == image.dtype
        expected = np.zeros((8, 4), dtype=np.float32)
        expected[2:6] = np.rot90(square, k)  # numpy: counter-clockwise too
        np.testing.assert_array_equal(view[0, 0].numpy(), expected)
    assert batch.targets.tolist() == [0, 1, 2, 3]


def test_two_rotations_use_the_whole_image():
    image = torch.arange(32, dtype=torch.float32).view(1, 1, 8, 4)
    batch = RotationPrediction(rotations=2).prepare(image, torch.zeros(1))
    assert torch.equal(batch.inputs[0], image)
    # a half turn: (r, c) -> (7 - r, 3 - c)
    turned = batch.inputs[1][0, 0]
    for r in range(8):
        for c in range(4):
            assert turned[7 - r, 3 - c] == image[0, 0, r, c]
    assert batch.targets.tolist() == [0, 1]


def test_landscape_images_crop_along_the_width():
    image = torch.rand(2, 1, 4, 10)
    batch = RotationPrediction(crop="center").prepare(image, torch.zeros(2))
    for k, view in enumerate(batch.inputs):
        assert view.shape == image.shape
        assert torch.equal(view[..., 3:7], torch.rot90(image[..., 3:7], k, dims=(-2, -1)))
        assert view[..., :3].abs().sum() == 0 and view[..., 7:].abs().sum() == 0


# ---------------------------------------------------------------- labels agree with rotations
def _window_of(image: torch.Tensor, square: torch.Tensor) -> int | None:
    """Row offset where ``square`` (S x S) sits in ``image`` (H x S), or None."""
    s = square.shape[-1]
    for offset in range(image.shape[-2] - s + 1):
        if torch.equal(image[offset : offset + s], square):
            return offset
    return None


def test_random_single_rotations_agree_with_their_labels():
    torch.manual_seed(0)
    images = torch.rand(32, 1, 12, 4)
    task = RotationPrediction(all_rotations=False, crop="random")
    batch = task.prepare(images, torch.zeros(32))
    (view,), labels = batch.inputs, batch.targets
    assert view.shape == images.shape and labels.shape == (32,) and labels.dtype == torch.long
    assert set(labels.tolist()) == {0, 1, 2, 3}  # 32 draws: every class appears
    offsets = set()
    for i in range(32):
        framed = view[i, 0]
        assert framed[:4].abs().sum() == 0 and framed[8:].abs().sum() == 0  # black frame
        # undoing the labelled rotation gives back a 4x4 window of the original image
        undone = torch.rot90(framed[4:8], -int(labels[i]), dims=(-2, -1))
        offset = _window_of(images[i, 0], undone)
        assert offset is not None, i
        offsets.add(offset)
    assert len(offsets) > 1  # the crop position is random


def test_all_rotations_are_turns_of_one_crop_per_image():
    torch.manual_seed(1)
    images = torch.rand(3, 1, 12, 4)
    batch = RotationPrediction(all_rotations=True).prepare(images, torch.zeros(3))
    assert batch.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    base = batch.inputs[0]
    for k, view in enumerate(batch.inputs):
        undone = torch.rot90(view[:, :, 4:8], -k, dims=(-2, -1))
        assert torch.equal(undone, base[:, :, 4:8])


# ----------------------------------------------------------------------------------- the loss
def test_loss_is_the_cross_entropy_by_hand():
    task = RotationPrediction()
    outputs = [torch.tensor([[2.0, 0.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0, 0.0]])]
    targets = torch.tensor([0, 1])
    first = -math.log(math.exp(2) / (math.exp(2) + 1 + 1 + math.exp(-1)))
    second = -math.log(math.e / (math.e + 3))
    assert task.loss(outputs, targets).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_loss_refuses_logits_of_the_wrong_width():
    with pytest.raises(ValueError, match="rotation expects"):
        RotationPrediction(rotations=2).loss([torch.zeros(2, 4)], torch.zeros(2, dtype=torch.long))


def test_heads_and_option_checks():
    assert RotationPrediction().build_embedding_head(16)(torch.randn(5, 16)).shape == (5, 4)
    mlp = RotationPrediction(rotations=2, hidden_dim=8).build_embedding_head(16)
    assert mlp(torch.randn(5, 16)).shape == (5, 2)
    for bad in (dict(rotations=3), dict(crop="corner"), dict(hidden_dim=-1)):
        with pytest.raises(ValueError):
            RotationPrediction(**bad)


# ---------------------------------------------------------------- the ssl-bench contract
@pytest.mark.parametrize(
    "options",
    [{}, dict(rotations=2, all_rotations=False), dict(crop="center", hidden_dim=8, all_rotations=False)],
)
def test_meets_the_pretext_contract(options):
    task = check_pretext("rotation", **options)
    assert isinstance(task, RotationPrediction)


@pytest.mark.parametrize("transfer", ["finetune", "multitask"])
def test_trains_with_finetune_and_multitask(transfer):
    classifiers = check_transfer(transfer, pretexts=["rotation"])
    assert set(classifiers) == {"rotation"}
