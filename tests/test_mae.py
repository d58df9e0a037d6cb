"""MAE (pretext/mae.py): rectangular patches, the mask, the loss on the hidden patches, the ViT it
needs, and the pretext stage it trains through finetune."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from lightly.models import utils as lightly_utils

from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.config import PROFILES
from ssl_bench.errors import ConfigError
from ssl_bench.models.backbones import create_backbone, takes_image_size
from ssl_bench.models.classifiers import build_classifier
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext.mae import MAE, masked_patch_loss
from ssl_bench.pretext.vit import patchify, random_patch_mask, sincos_grid_embedding, unpatchify

SIZE = (64, 32)  # the smoke profile's (height, width)


def hand_patch(image: torch.Tensor, row: int, col: int, ph: int, pw: int) -> list[float]:
    """Patch (row, col) of a (C, H, W) image, its pixels row by row, the channels last."""
    c = image.shape[0]
    return [float(image[k, row * ph + i, col * pw + j]) for i in range(ph) for j in range(pw) for k in range(c)]


# ---------------------------------------------------------------- patches


def test_patchify_matches_a_hand_computation_on_a_rectangular_image():
    images = torch.arange(2 * 2 * 4 * 9, dtype=torch.float32).reshape(2, 2, 4, 9)  # B=2, C=2, 4x9
    patches = patchify(images, (2, 3))  # a 2x3 grid of 2x3 patches
    assert patches.shape == (2, 6, 2 * 3 * 2)
    for b in range(2):
        for r in range(2):
            for c in range(3):
                assert patches[b, r * 3 + c].tolist() == hand_patch(images[b], r, c, 2, 3)
    assert torch.equal(unpatchify(patches, (2, 3), (2, 3), channels=2), images)


def test_patchify_equals_lightlys_on_a_square_image():
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(patchify(images, (16, 16)), lightly_utils.patchify(images, 16))


def test_patchify_refuses_sizes_that_are_not_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="not a multiple of the patch size 16x16"):
        patchify(torch.zeros(1, 1, 64, 40), (16, 16))


def test_rectangular_sincos_embedding_is_lightlys_on_a_square_grid():
    square = lightly_utils.get_2d_sine_cosine_positional_embedding(embed_dim=32, grid_size=4, num_prefix_tokens=1)
    assert torch.allclose(sincos_grid_embedding(32, (4, 4), prefix=1)[0], torch.from_numpy(square).float())
    rect = sincos_grid_embedding(32, (4, 2), prefix=1)[0]
    assert rect.shape == (1 + 8, 32) and torch.all(rect[0] == 0)
    # patch (row 3, column 1) has the embedding of the square grid's patch (3, 1)
    assert torch.allclose(rect[1 + 3 * 2 + 1], torch.from_numpy(square[1 + 3 * 4 + 1]).float())


# ---------------------------------------------------------------- the mask


@pytest.mark.parametrize("n, ratio, masked", [(8, 0.75, 6), (10, 0.75, 8), (128, 0.75, 96), (50, 0.6, 30)])
def test_mask_ratio_is_respected_per_image(n, ratio, masked):
    torch.manual_seed(0)
    idx_keep, idx_mask = random_patch_mask(5, n, ratio)
    assert masked == n - int(n * (1 - ratio))
    assert idx_mask.shape == (5, masked) and idx_keep.shape == (5, n - masked)
    for keep, hide in zip(idx_keep.tolist(), idx_mask.tolist()):
        assert sorted(keep + hide) == list(range(n))  # a partition of the patches, per image
    assert len({tuple(sorted(h)) for h in idx_mask.tolist()}) > 1  # drawn independently per image


def test_the_encoder_sees_only_the_visible_patches_and_the_targets_are_the_hidden_ones():
    """The mask is drawn with the batch (``prepare``), so that a data-parallel worker's share of
    it is its images'; the head hides exactly the patches it marks."""
    backbone = create_backbone("test_vit", in_chans=1, num_classes=1, image_size=SIZE)
    task = MAE(mask_ratio=0.75, decoder_dim=32, decoder_heads=2)
    model = PretextModel(backbone, task).train()
    lengths = []
    backbone.blocks[0].register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
    x = torch.rand(3, 1, *SIZE, generator=torch.Generator().manual_seed(1))
    n = (SIZE[0] // 16) * (SIZE[1] // 16)  # 8 patches of 16x16
    batch = task.prepare(x, torch.zeros(3))
    images, mask = batch.inputs
    assert torch.equal(images, x) and mask.dtype == torch.bool and mask.shape == (3, n)
    assert mask.sum(dim=1).tolist() == [6, 6, 6]
    prediction, target = model(batch.inputs)
    assert lengths == [backbone.num_prefix_tokens + n - 6]  # the class token and the 2 visible patches
    assert prediction.shape == target.shape == (3, 6, 16 * 16)
    for b in range(3):
        hidden = [p for p in range(n) if mask[b, p]]  # in patch order
        assert [t.tolist() for t in target[b]] == [hand_patch(x[b], p // 2, p % 2, 16, 16) for p in hidden]


def test_the_head_alone_draws_a_mask_and_refuses_a_wrong_one():
    backbone = create_backbone("test_vit", in_chans=1, num_classes=1, image_size=SIZE)
    head = MAE(decoder_dim=32, decoder_heads=2).build_masked_head(backbone)
    x = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(1))
    _, target = head(x)  # no mask given: 6 of each image's 8 patches hidden
    patches = [[hand_patch(x[b], p // 2, p % 2, 16, 16) for p in range(8)] for b in range(2)]
    for b in range(2):
        got = [t.tolist() for t in target[b]]
        assert len(got) == 6 and all(g in patches[b] for g in got) and len({tuple(g) for g in got}) == 6
    with pytest.raises(ValueError, match="must hide 6 of the 8 patches"):
        head(x, torch.zeros(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"must be \(2, 8\) bool"):
        head(x, torch.ones(2, 6, dtype=torch.bool))


# ---------------------------------------------------------------- the loss


def test_loss_is_the_mse_on_the_hidden_patches_computed_by_hand():
    image = torch.arange(24, dtype=torch.float32).reshape(1, 1, 4, 6) / 10  # 2x2 patches of 2x3
    idx_mask = torch.tensor([[3, 0]])  # patches (1, 1) and (0, 0) are hidden
    prediction = torch.linspace(-1, 1, 12).reshape(1, 2, 6)
    target = lightly_utils.get_at_index(patchify(image, (2, 3)), idx_mask)
    hand = []
    for k, (r, c) in enumerate([(1, 1), (0, 0)]):
        pixels = [float(image[0, 0, r * 2 + i, c * 3 + j]) for i in range(2) for j in range(3)]
        hand += [(float(prediction[0, k, d]) - pixels[d]) ** 2 for d in range(6)]
    assert float(MAE().loss([prediction, target])) == pytest.approx(sum(hand) / len(hand), rel=1e-6)

    normed = []
    for k, (r, c) in enumerate([(1, 1), (0, 0)]):
        pixels = [float(image[0, 0, r * 2 + i, c * 3 + j]) for i in range(2) for j in range(3)]
        mean, var = statistics.mean(pixels), statistics.variance(pixels)  # unbiased, as MAE's code
        normed += [(float(prediction[0, k, d]) - (pixels[d] - mean) / (var + 1e-6) ** 0.5) ** 2 for d in range(6)]
    loss = MAE(norm_pix_loss=True).loss([prediction, target])
    assert float(loss) == pytest.approx(sum(normed) / len(normed), rel=1e-6)
    assert masked_patch_loss(prediction.bfloat16(), target, False).dtype == torch.float32


def test_loss_refuses_anything_but_two_matching_patch_tensors():
    with pytest.raises(ValueError, match="MAE expects the predicted and true masked patches"):
        MAE().loss([torch.zeros(2, 3, 4)])


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    task = MAE()
    model = PretextModel(create_backbone("test_vit", in_chans=1, num_classes=1, image_size=SIZE), task).train()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE[0]), torch.linspace(0, 1, SIZE[1]), indexing="ij")
    breast = ((yy ** 2 + xx ** 2) < 0.8).float() * 0.6  # a bright half-disc on a dark background
    x = (breast + 0.1 * torch.rand(8, 1, *SIZE, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_now() -> float:
        torch.manual_seed(123)  # the same masks every time
        with torch.no_grad():
            return float(task.loss(model([x])))

    before = loss_now()
    for _ in range(15):
        loss = task.loss(model([x]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_now()
    assert after < 0.5 * before, (before, after)


# ---------------------------------------------------------------- the backbone


def test_mae_needs_a_vit():
    MAE().check_backbone("vit_tiny_patch16_224")
    MAE().check_backbone("test_vit")
    MAE().check_backbone("no_such_model")  # left to create_backbone, which suggests close matches
    with pytest.raises(ConfigError) as err:
        MAE().check_backbone("resnet10t")
    assert str(err.value) == ("pretext mae needs a ViT backbone (timm vision_transformer, e.g. "
                              "vit_tiny_patch16_224); got resnet10t")
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), MAE())


def test_vits_are_built_for_the_runs_image_size():
    assert takes_image_size("vit_tiny_patch16_224") and not takes_image_size("resnet10t")
    vit = create_backbone("vit_tiny_patch16_224", in_chans=1, num_classes=1, image_size=SIZE)
    assert tuple(vit.patch_embed.img_size) == SIZE and vit.pos_embed.shape[1] == 1 + 8
    assert vit(torch.rand(2, 1, *SIZE)).shape == (2, 1)
    cnn = create_backbone("test_resnet", in_chans=1, num_classes=1, image_size=SIZE)  # takes any size
    assert cnn(torch.rand(2, 1, 96, 40)).shape == (2, 1)


def test_a_cnn_backbone_is_one_line_and_exit_2_before_anything_is_written(tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--pretext", "mae", "--transfer", "finetune", "--profile", "smoke",
                                       "--backbone", "resnet10t", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()  # the run's header line, then the error
    assert "Traceback" not in result.output and [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert lines[-1] == (
        "error: pretext mae needs a ViT backbone (timm vision_transformer, e.g. vit_tiny_patch16_224); got resnet10t")
    assert not out.exists() or not any(out.iterdir())


def test_multitask_refuses_mae_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["run", "--pretext", "mae", "--transfer", "multitask", "--profile", "smoke",
                                       "--backbone", "test_vit", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "cannot use pretext 'mae' (a masked task)" in result.output.strip().splitlines()[-1]


def test_smoke_run_pretrains_and_finetunes_a_vit(tmp_path):
    result = CliRunner().invoke(main, ["run", "--pretext", "mae", "--transfer", "finetune", "--profile", "smoke",
                                       "--backbone", "test_vit", "--fold", "0", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    fold = tmp_path / "mae-finetune" / "folds" / "0"
    metrics = json.loads((fold / "metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0
    record = torch.load(fold / "model.pt", weights_only=True)
    assert record["backbone"] == "test_vit" and record["image_size"] == list(SIZE)
    fresh = build_classifier(record["backbone"], record["architecture"], image_size=record["image_size"])
    fresh.load_state_dict(record["state_dict"], strict=True)  # predict rebuilds the ViT at the run's size


def test_the_ssl_zoo_gives_mae_a_vit_under_every_profile():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ssl_zoo.yaml"
    for profile in ("smoke", "quick", "paper"):
        plan = load_plan(path, profile=profile)
        mae = [c for c in plan.configs if c.pretext == "mae"]
        assert len(mae) == 1
        MAE().check_backbone(mae[0].model.backbone)
        others = {c.model.backbone for c in plan.configs if c.pretext not in ("mae", "msn", "ijepa")}  # ViT tasks
        assert others == {PROFILES[profile]["model.backbone"]}  # the profile still sizes the others
    flagged = load_plan(path, profile="smoke", flags={"model.backbone": "resnet18"})
    assert {c.model.backbone for c in flagged.configs} == {"resnet18"}  # --backbone still wins
