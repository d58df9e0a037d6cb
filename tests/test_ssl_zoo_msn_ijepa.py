"""MSN and I-JEPA (pretext/msn.py, pretext/ijepa.py), the masked ViT tasks with a momentum target
encoder: each loss equals lightly's, wired as lightly's example wires it, on the same weights and
masks; the masks; the target encoder (PretextModel's teacher for a masked task); a few steps
lower the loss; the contract; a CNN refused in one line; a killed fold resumes to the
uninterrupted result; one smoke fold each on vit_tiny_patch16_224."""
from __future__ import annotations

import copy
import json
import math
import pickle
from pathlib import Path

import pytest
import test_resume_fold as resume
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from lightly.data import IJEPAMaskCollator
from lightly.loss import MSNLoss
from lightly.loss.msn_loss import sinkhorn
from lightly.models import utils as lightly_utils
from lightly.models.modules import IJEPAPredictorTIMM, MaskedVisionTransformerTIMM
from lightly.models.modules.heads import MSNProjectionHead

from _steps import losses_before_and_after
from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.errors import ConfigError
from ssl_bench.experiment.fold import train_and_score_fold
from ssl_bench.experiment.run import prepare_run
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext.ijepa import IJEPA, BlockMasks
from ssl_bench.pretext.msn import MSN, focal_block_keep
from ssl_bench.registry import PRETEXTS
from ssl_bench.testing import check_pretext

SIZE = (64, 32)  # the smoke profile's (height, width): a 4x2 grid of 16 px patches
CPU = torch.device("cpu")
SMALL = {"msn": {"hidden_dim": 32, "out_dim": 16, "num_prototypes": 8, "focal_views": 2},
         "ijepa": {"predictor_dim": 32, "predictor_heads": 2}}


def breast_like(b: int = 4, h: int = SIZE[0], w: int = SIZE[1], seed: int = 0) -> torch.Tensor:
    """Tissue on the left with a random texture, background on the right."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = ((1 - xx) * (0.6 + 0.4 * yy)) * (xx < 0.7)
    return (base * (0.7 + 0.3 * torch.rand(b, 1, h, w, generator=g))).clamp(0, 1)


def vit_model(task, size=SIZE, seed: int = 0) -> PretextModel:
    torch.manual_seed(seed)
    return PretextModel(create_backbone("test_vit", in_chans=1, num_classes=1, image_size=size), task).train()


def with_prefix(keep: torch.Tensor) -> torch.Tensor:
    """lightly's token indices: the class token (test_vit has one), then the patches."""
    return torch.cat([torch.zeros(keep.shape[0], 1, dtype=keep.dtype), keep + 1], dim=1)


def lightly_masked_vit(vit) -> MaskedVisionTransformerTIMM:
    """lightly's own masked ViT on a copy of ``vit`` (weights as they are; a square image: lightly
    resamples the position embedding of a ViT built with dynamic_img_size to a square grid)."""
    return MaskedVisionTransformerTIMM(copy.deepcopy(vit), weight_initialization="skip", pos_embed_initialization="skip")


# ---------------------------------------------------------------- MSN


def test_msn_loss_is_lightlys_example_on_the_same_weights_and_masks():
    """On a square grid (64x64: 4x4 patches), where lightly's masked ViT takes the ViT as built."""
    size = (64, 64)
    task = MSN(**SMALL["msn"])
    model = vit_model(task, size)
    batch = task.prepare(breast_like(4, *size), torch.zeros(4))
    target, anchor, f0, f1, anchor_keep, focal_keep = batch.inputs
    assert anchor_keep.shape == (4, 13) and focal_keep.shape == (2 * 4, 4)  # 15% of 16 dropped; 2x2 blocks
    got = task.loss(model(batch.inputs))

    # lightly's examples/pytorch/msn.py: target backbone and head (here the anchor network's copy, as
    # at the start), forward_masked on the anchors, MSNLoss(anchors_out, targets_out, prototypes.data)
    vit, head = model.backbone, model.head
    anchor_backbone, target_backbone = lightly_masked_vit(vit), lightly_masked_vit(vit)
    anchor_projection = MSNProjectionHead(64, 32, 16)
    anchor_projection.load_state_dict(head.branch.projection.state_dict())
    target_projection = copy.deepcopy(anchor_projection)
    targets_out = target_projection(target_backbone(images=target))
    anchors_out = anchor_projection(anchor_backbone(images=anchor, idx_keep=with_prefix(anchor_keep)))
    focal_out = anchor_projection(anchor_backbone(images=torch.cat([f0, f1]), idx_keep=with_prefix(focal_keep)))
    want = MSNLoss()(torch.cat([anchors_out, focal_out]), targets_out, head.prototypes.weight.data)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)


def test_msn_loss_written_out_and_its_options():
    """Without Sinkhorn: the cross-entropy of each anchor's prototype assignment against its image's
    target's, sharpened to temperature 0.1 * 0.25, minus the entropy of the mean anchor assignment
    plus log K (me-max); with Sinkhorn, lightly's sinkhorn on the sharpened targets."""
    g = torch.Generator().manual_seed(0)
    b, d, k, views = 3, 5, 4, 3
    anchors, target, prototypes = torch.randn(views * b, d, generator=g), torch.randn(b, d, generator=g), \
        torch.randn(k, d, generator=g)
    a, t, p = F.normalize(anchors, dim=1), F.normalize(target, dim=1), F.normalize(prototypes, dim=1)
    anchor_probs = F.softmax(a @ p.T / 0.1, dim=1)
    target_probs = F.softmax(t @ p.T / 0.025, dim=1)  # softmax(/0.1) ** (1/0.25), renormalised
    ce = -(target_probs.repeat(views, 1) * anchor_probs.log()).sum(1).mean()
    mean = anchor_probs.mean(0)
    me_max = (mean * mean.log()).sum() + math.log(k)
    outputs = [anchors.bfloat16(), prototypes, target]
    task = MSN(focal_views=views - 1, sinkhorn_iterations=0, me_max_weight=0.5)
    assert task.loss(outputs).dtype == torch.float32
    assert float(task.loss([anchors, prototypes, target])) == pytest.approx(float(ce + 0.5 * me_max), rel=1e-5)
    balanced = sinkhorn(F.softmax(t @ p.T / 0.025, dim=1), iterations=3)
    ce3 = -(balanced.repeat(views, 1) * anchor_probs.log()).sum(1).mean()
    task = MSN(focal_views=views - 1)
    assert float(task.loss([anchors, prototypes, target])) == pytest.approx(float(ce3 + me_max), rel=1e-5)
    with pytest.raises(ValueError, match="MSN expects 3 anchor views per target"):
        task.loss([anchors[:b], prototypes, target])
    for bad in ({"mask_ratio": 1.0}, {"focal_views": -1}, {"focal_size": 0}, {"temperature": 0}, {"momentum": 2}):
        with pytest.raises(ValueError):
            MSN(**bad)


def test_msn_scores_the_whole_global_batch_on_every_data_parallel_worker(monkeypatch):
    """2 workers (the gather simulated), each holding its half of every view's rows (as
    ``FitContext.share_of`` cuts them): each scores lightly's loss of the whole batch."""
    from ssl_bench.pretext import msn

    g = torch.Generator().manual_seed(0)
    b, d, views = 4, 5, 3
    anchors, target, prototypes = torch.randn(views * b, d, generator=g), torch.randn(b, d, generator=g), \
        torch.randn(6, d, generator=g)
    blocks = [*anchors.split(b), target]  # each view's rows, the targets'
    halves = [(x[: b // 2], x[b // 2:]) for x in blocks]

    def gather(x):  # every worker's share of the tensor this worker holds
        return list(next(h for h in halves if any(torch.equal(x, part) for part in h)))

    monkeypatch.setattr(msn.dist, "world_size", lambda: 2)
    monkeypatch.setattr(msn.dist, "gather", gather)
    whole = float(MSNLoss()(anchors, target, prototypes))
    task = MSN(focal_views=views - 1)
    for rank in (0, 1):
        share = [h[rank] for h in halves]
        got = task.loss([torch.cat(share[:views]), prototypes, share[views]])
        assert float(got) == pytest.approx(whole, rel=1e-6)


def test_msn_anchors_see_their_kept_patches_only_and_focal_views_keep_a_block():
    task = MSN(**SMALL["msn"])
    model = vit_model(task)
    lengths: dict[str, list[int]] = {"network": [], "target encoder": []}
    for who, vit in (("network", model.backbone), ("target encoder", model.teacher_head.encoder.vit)):
        vit.blocks[0].register_forward_hook(lambda m, args, out, who=who: lengths[who].append(args[0].shape[1]))
    batch = task.prepare(breast_like(), torch.zeros(4))
    anchors, prototypes, target = model(batch.inputs)
    # the anchor: class token + 6 of 8 patches; the focal views: class token + a 2x1 block; the target: all 9
    assert lengths == {"network": [1 + 6, 1 + 2], "target encoder": [1 + 8]}
    assert anchors.shape == (3 * 4, 16) and prototypes.shape == (8, 16) and target.shape == (4, 16)
    assert anchors.requires_grad and prototypes.requires_grad and not target.requires_grad
    for row in batch.inputs[-1].tolist():  # a 2x1 block of the 4x2 grid: (r, c) and (r + 1, c)
        assert row[1] == row[0] + 2 and row[0] in range(6)
    # on a larger grid: blocks of 3x2 patches, anywhere the block fits
    torch.manual_seed(0)
    blocks = focal_block_keep(400, (5, 4), (3, 2))
    corners = {(r[0] // 4, r[0] % 4) for r in blocks.tolist()}
    assert corners == {(r, c) for r in range(3) for c in range(3)}
    for r in blocks.tolist():
        top, left = divmod(r[0], 4)
        assert r == [(top + i) * 4 + left + j for i in range(3) for j in range(2)]


def test_msn_target_encoder_is_a_momentum_copy_without_gradients_and_prototypes_train():
    task = MSN(**SMALL["msn"], momentum=0.9)
    model = vit_model(task)
    student = list(model.head.branch.parameters())
    teacher = model.teacher_parameters()
    assert len(teacher) == len(student) and all(torch.equal(s, t) for s, t in zip(student, teacher))
    assert not hasattr(model, "teacher_backbone") and all(not t.requires_grad for t in teacher)
    assert id(model.head.prototypes.weight) not in {id(t) for t in teacher}
    batch = task.prepare(breast_like(), torch.zeros(4))
    task.loss(model(batch.inputs)).backward()
    assert all(t.grad is None for t in teacher) and model.head.prototypes.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    old = [t.detach().clone() for t in teacher]
    model.start_teacher(10)
    model.after_step()
    for t, s, o in zip(teacher, student, old):  # m = 0.9 at the first of 10 steps
        assert torch.allclose(t, 0.9 * o + 0.1 * s, atol=1e-6)
    # the state a fold checkpoint saves: the target encoder, the prototypes, the schedule's step
    state = model.state_dict()
    assert "head.prototypes.weight" in state and float(state["teacher_steps"]) == 1.0
    assert any(k.startswith("teacher_head.encoder.vit.blocks") for k in state)


# ---------------------------------------------------------------- I-JEPA


def test_ijepa_loss_is_lightlys_example_on_the_same_weights_and_masks():
    """On a square grid (64x64: 4x4 patches) lightly's own predictor, with our predictor's
    weights, and lightly's masked ViT give the loss of lightly's examples/pytorch/ijepa.py."""
    size = (64, 64)
    task = IJEPA(**SMALL["ijepa"], target_scale=(0.2, 0.3), context_scale=(0.6, 0.8), min_keep=2)
    model = vit_model(task, size)
    x = breast_like(3, *size)
    batch = task.prepare(x, torch.zeros(3))
    images, context, targets = batch.inputs
    assert context.shape[:2] == (3, 1) and targets.shape[:2] == (3, 4)
    got = task.loss(model(batch.inputs))

    predictor = IJEPAPredictorTIMM(num_patches=16, depth=2, mlp_dim=64, predictor_embed_dim=32, num_heads=2)
    assert torch.allclose(predictor.decoder.pos_embed, model.head.predictor.decoder.pos_embed)  # the square's
    predictor.load_state_dict(model.head.predictor.state_dict())
    encoder, target_encoder = lightly_masked_vit(model.backbone), lightly_masked_vit(model.backbone)
    masks_enc, masks_pred = list(context.unbind(1)), list(targets.unbind(1))
    z = torch.cat([encoder.encode(images, idx_keep=with_prefix(m))[:, 1:] for m in masks_enc])
    z = predictor(z, masks_enc, masks_pred)
    with torch.no_grad():  # forward_target
        h = target_encoder.encode(images)[:, 1:]
        h = F.layer_norm(h, (h.size(-1),))
        h = lightly_utils.repeat_interleave_batch(lightly_utils.apply_masks(h, masks_pred), 3, repeat=len(masks_enc))
    want = torch.nn.SmoothL1Loss()(z, h)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="I-JEPA expects the predicted and the target"):
        task.loss([z])
    with pytest.raises(ValueError, match="block masks that prepare draws"):
        model([images])


def test_ijepa_predictor_embeds_the_rectangular_grid_row_by_row():
    task = IJEPA(**SMALL["ijepa"])
    pos = vit_model(task, (96, 32)).head.predictor.decoder.pos_embed[0]  # a 6x2 grid
    square = torch.from_numpy(lightly_utils.get_2d_sine_cosine_positional_embedding(32, 6, num_prefix_tokens=0))
    assert pos.shape == (12, 32) and not pos.requires_grad
    for r in range(6):
        for c in range(2):  # patch (r, c) has the position of the 6x6 grid's patch (r, c)
            assert torch.allclose(pos[r * 2 + c], square[r * 6 + c].float())


def test_block_masks_sizes_are_lightlys_relative_to_the_grids_shape():
    square, lightly_square = BlockMasks((14, 14), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4, 10), \
        IJEPAMaskCollator(input_size=(14, 14), patch_size=1)
    for seed in range(5):
        got = square._sample_block_size(torch.Generator().manual_seed(seed), (0.15, 0.2), (0.75, 1.5))
        want = lightly_square._sample_block_size(torch.Generator().manual_seed(seed), (0.15, 0.2), (0.75, 1.5))
        assert got == want
    # on the 48x24 grid of 768x384 images the context block has the grid's shape: 46x23 of 0.9 of it
    tall = BlockMasks((48, 24), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4, 10)
    assert tall._sample_block_size(torch.Generator(), (0.9, 0.9), (1.0, 1.0)) == (46, 23)
    h, w = tall._sample_block_size(torch.Generator(), (0.2, 0.2), (1.0, 1.0))
    assert (h, w) == (21, 11) and h * w == pytest.approx(0.2 * 48 * 24, rel=0.05)  # a target, ratio 1 x 2


def test_block_masks_reach_every_patch_avoid_the_targets_and_come_from_torchs_generator():
    masks = BlockMasks((8, 4), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4, 10)
    torch.manual_seed(0)
    seen = torch.zeros(32)
    draws = [masks.draw(6) for _ in range(20)]
    for context, targets in draws:
        seen[context.flatten()] += 1
        seen[targets.flatten()] += 1
    assert bool((seen > 0).all())  # lightly's corner draw never reaches the last row or column
    torch.manual_seed(0)
    again = pickle.loads(pickle.dumps(masks)).draw(6)  # picklable (Ray), seeded by torch
    assert all(torch.equal(a, b) for a, b in zip(again, draws[0]))
    big = BlockMasks((14, 14), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4, 10)
    torch.manual_seed(1)
    context, targets = big.draw(8)
    assert context.shape[:2] == (8, 1) and targets.shape[:2] == (8, 4) and targets.shape[2] > 10
    for c, t in zip(context, targets):  # the context leaves the target blocks out
        assert not set(c.flatten().tolist()) & set(t.flatten().tolist())
    tiny = BlockMasks((2, 2), (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4, 10)  # blocks of one patch
    context, targets = tiny.draw(3)
    assert context.shape == (3, 1, 1) and targets.shape == (3, 4, 1)


def test_ijepa_target_encoder_is_a_momentum_copy_of_the_vit_only():
    task = IJEPA(**SMALL["ijepa"], momentum=0.8)
    model = vit_model(task)
    student, teacher = list(model.head.encoder.parameters()), model.teacher_parameters()
    assert len(teacher) == len(student) < len(list(model.head.parameters()))  # not the predictor
    batch = task.prepare(breast_like(), torch.zeros(4))
    prediction, target = model(batch.inputs)
    assert prediction.requires_grad and not target.requires_grad
    task.loss([prediction, target]).backward()
    assert all(t.grad is None for t in teacher)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    old = [t.detach().clone() for t in teacher]
    model.start_teacher(5)
    model.after_step()
    assert all(torch.allclose(t, 0.8 * o + 0.2 * s, atol=1e-6) for t, s, o in zip(teacher, student, old))


def test_ijepa_needs_a_grid_of_2x2():
    with pytest.raises(ConfigError, match="needs a patch grid of at least 2x2 for its blocks; got 1x4"):
        vit_model(IJEPA(**SMALL["ijepa"]), (16, 64))
    for bad in ({"target_scale": (0.3, 0.2)}, {"context_scale": "0.9"}, {"target_aspect": (0, 1)},
                {"predictor_dim": 30}, {"targets": 0}):
        with pytest.raises(ValueError):
            IJEPA(**bad)


# ---------------------------------------------------------------- both


@pytest.mark.parametrize("name", ["msn", "ijepa"])
def test_a_few_steps_lower_the_loss(name):
    task = PRETEXTS.get(name)(**SMALL[name])
    model = vit_model(task)
    batch = task.prepare(breast_like(8), torch.zeros(8))
    before, after = losses_before_and_after(task, model, batch, steps=8)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("name", ["msn", "ijepa"])
def test_contract_and_a_cnn_refused_in_one_line(name, tmp_path):
    task = check_pretext(name, **SMALL[name])  # trained on test_vit: a ViT task refuses test_resnet
    assert task.uses_teacher and task.kind == "masked"
    with pytest.raises(ConfigError, match=f"pretext {name} needs a ViT backbone"):
        PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task)
    result = CliRunner().invoke(main, ["run", "--pretext", name, "--transfer", "finetune", "--profile", "smoke",
                                       "--backbone", "resnet10t", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: pretext {name} needs a ViT backbone (timm vision_transformer, e.g. vit_tiny_patch16_224); "
        "got resnet10t")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["msn", "ijepa"])
def test_a_fold_killed_in_the_pretext_stage_resumes_to_the_uninterrupted_result(tmp_path, name):
    """The checkpoint holds the target encoder, its schedule's step and MSN's prototypes (the
    model's state) and the random state the masks are drawn from."""
    cfg = build_config("smoke", flags={"pretext": name, "transfer": "finetune", "model.backbone": "test_vit",
                                       "out": str(tmp_path)},
                       sets=["train.checkpoint_every=1", "train.pretext_epochs=2", "train.epochs=1",
                             *(f"params.{name}.{k}={v}" for k, v in SMALL[name].items())])
    run = prepare_run(cfg)
    uninterrupted = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU)
    killed = resume.MemoryStore(kill_at=1)
    with pytest.raises(resume.Killed):
        train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=killed)
    assert killed.saves == [("pretext", 1)]
    resumed = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=resume.MemoryStore(blob=killed.blob))
    resume.assert_same_fold(resumed, uninterrupted)


@pytest.mark.parametrize("name", ["msn", "ijepa"])
def test_smoke_fold_on_a_vit_and_the_zoo_gives_it_one(tmp_path, name):
    sets = [f"params.{name}.{k}={v}" for k, v in SMALL[name].items()] + ["train.epochs=1"]  # seconds, not tens
    result = CliRunner().invoke(main, ["run", "--pretext", name, "--transfer", "finetune", "--profile", "smoke",
                                       "--backbone", "vit_tiny_patch16_224", "--fold", "0", "--out", str(tmp_path),
                                       "--quiet", *(arg for s in sets for arg in ("--set", s))])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / f"{name}-finetune" / "folds" / "0" / "metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ssl_zoo.yaml"
    for profile in ("smoke", "quick", "paper"):
        configs = [c for c in load_plan(path, profile=profile).configs if c.pretext == name]
        assert [c.model.backbone for c in configs] == ["vit_tiny_patch16_224"]
        assert configs[0].transfer == "finetune"
