"""iBOT and DINOv2 (pretext/ibot.py, pretext/dinov2.py, their machinery in
pretext/masked_distillation.py): the losses equal lightly's wired as lightly's DINOv2 example wires
them, the student and the teacher equal lightly's masked ViT and timm's own ViT on local crops,
the block masks, the momentum teacher, the contract, a few steps lowering the loss, a fold resumed
from its checkpoint, the one-line refusal of a CNN and one smoke fold on vit_tiny_patch16_224."""
from __future__ import annotations

import copy
import json
import random

import pytest
import timm
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.utils.scheduler import cosine_schedule

from _steps import losses_before_and_after
from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.errors import ConfigError
from ssl_bench.experiment.fold import train_and_score_fold
from ssl_bench.experiment.run import prepare_run
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.classifiers import build_classifier
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext.dinov2 import DINOv2
from ssl_bench.pretext.ibot import IBOT
from ssl_bench.pretext.vit import draw_block_mask
from ssl_bench.testing import check_pretext

from test_resume_fold import CPU, Killed, MemoryStore, assert_same_fold

SIZE = (64, 32)  # the smoke profile's (height, width): a 4x2 grid of 16 px patches
SMALL = {"hidden_dim": 32, "bottleneck_dim": 8, "out_dim": 16}
TASKS = {"ibot": IBOT, "dinov2": DINOv2}
#: the smoke profile's synthetic set at 24 images (12 patients): 3 steps an epoch, not 6
TINY_DATA = ["--set", "params.synthetic.n_patients=12", "--set", "params.synthetic.n_benign=16",
             "--set", "params.synthetic.n_malignant=8"]


def images(b: int = 4, seed: int = 0) -> torch.Tensor:
    """Tissue on the left with a random texture, background on the right."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE[0]), torch.linspace(0, 1, SIZE[1]), indexing="ij")
    base = ((1 - xx) * (0.6 + 0.4 * yy)) * (xx < 0.7)
    return (base * (0.7 + 0.3 * torch.rand(b, 1, *SIZE, generator=g))).clamp(0, 1)


def fixed_outputs(b: int = 3, local: int = 2, k: int = 10, d: int = 6, seed: int = 0):
    """The student's and the teacher's outputs as the heads return them, on fixed tensors: a
    mask over a 4x2 grid with images of 0, 1 and 3 masked patches."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(2 * b, 4, 2, dtype=torch.bool)
    mask[1, 0, 0] = True
    mask[3, 1:, 1] = True
    mask[4, 3, 0] = True
    m = int(mask.sum())
    student_cls = [torch.randn(b, k, generator=g) for _ in range(2 + local)]
    student_patch, cls_tokens = torch.randn(m, k, generator=g), torch.randn(2 * b, d, generator=g)
    teacher_cls, teacher_patch = [torch.randn(b, k, generator=g) for _ in range(2)], torch.randn(m, k, generator=g)
    outputs = [*student_cls, student_patch, cls_tokens, mask, *teacher_cls, teacher_patch]
    return outputs, (student_cls, student_patch, cls_tokens, mask, teacher_cls, teacher_patch)


# ---------------------------------------------------------------- the losses


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_loss_is_lightlys_wired_as_lightlys_dinov2_example(name):
    task = TASKS[name](local_crops=2, out_dim=10, teacher_temp=0.05, student_temp=0.2, center_momentum=0.8)
    dino = DINOLoss(output_dim=10, teacher_temp=0.05, student_temp=0.2, center_momentum=0.8)
    ibot = IBOTPatchLoss(output_dim=10, teacher_temp=0.05, student_temp=0.2, center_momentum=0.8)
    koleo = KoLeoLoss()
    centres = task.dino_criterion.center, task.patch_criterion.center.center
    for seed in range(2):  # the second call scores against the centres the first one left
        outputs, (s_cls, s_patch, tokens, mask, t_cls, t_patch) = fixed_outputs(seed=seed)
        got = float(task.loss(outputs))
        # lightly's examples/pytorch/dinov2.py: the student's [CLS] outputs of every view (globals
        # first) against the teacher's of the two global views, the masked patches, KoLeo on each
        # global view's [CLS] tokens
        want = dino(teacher_out=torch.cat(t_cls).chunk(2), student_out=torch.cat(s_cls).chunk(4))
        want = want + ibot(teacher_out=t_patch, student_out=s_patch, mask=mask)
        if name == "dinov2":
            want = want + 0.1 * sum(koleo(t) for t in tokens.chunk(2))
        assert got == pytest.approx(float(want), rel=1e-6)
        assert torch.allclose(task.dino_criterion.center, dino.center)
        assert torch.allclose(task.patch_criterion.center.center, ibot.center.center)
    # in place, the same tensors (a captured CUDA graph replays them)
    assert task.dino_criterion.center is centres[0] and task.patch_criterion.center.center is centres[1]
    assert float(centres[1].abs().sum()) > 0


def test_patch_loss_written_out_per_image_then_over_the_images():
    task = IBOT(local_crops=2, out_dim=10, teacher_temp=0.05, student_temp=0.2)
    outputs, (_, s_patch, _, mask, _, t_patch) = fixed_outputs()
    _, patch = task.distillation_losses(task.split(outputs))
    # the centre is still 0 for this first batch; rows of the patch outputs follow the mask's order
    ce = -(F.softmax(t_patch / 0.05, -1) * F.log_softmax(s_patch / 0.2, -1)).sum(-1)
    owner = mask.flatten(1).nonzero()[:, 0]
    per_image = [ce[owner == i].mean() if (owner == i).any() else torch.tensor(0.0) for i in range(mask.shape[0])]
    assert float(patch) == pytest.approx(float(sum(per_image) / mask.shape[0]), rel=1e-5)


def test_koleo_written_out_and_a_batch_without_masked_patches_leaves_the_patch_centre():
    outputs, (_, _, tokens, _, _, _) = fixed_outputs()
    reference = DINOv2(local_crops=2, out_dim=10, koleo_weight=0.5)  # its centres as the task's
    cls_loss, patch_loss = reference.distillation_losses(reference.split(outputs))
    # KoLeo: minus the mean log distance of each L2-normalised token to its nearest neighbour
    x = [F.normalize(t, dim=1) for t in tokens.chunk(2)]
    koleo = sum(-torch.log(torch.cdist(v, v).fill_diagonal_(float("inf")).min(1).values + 1e-8).mean() for v in x)
    task = DINOv2(local_crops=2, out_dim=10, koleo_weight=0.5)
    assert float(task.loss(outputs)) == pytest.approx(float(cls_loss + patch_loss + 0.5 * koleo), rel=1e-4)
    centre = task.patch_criterion.center.center.clone()
    none = torch.zeros(0, 10)
    empty = outputs[:4] + [none, tokens, torch.zeros(6, 4, 2, dtype=torch.bool)] + outputs[7:9] + [none]
    loss = task.loss(empty)
    assert torch.isfinite(loss) and torch.allclose(task.patch_criterion.center.center, centre, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="expects the student's 4"):
        task.loss(outputs[:-1])
    with pytest.raises(ValueError, match="koleo_weight"):
        DINOv2(koleo_weight=-1)
    with pytest.raises(ValueError, match="mask_ratio_min"):
        IBOT(mask_ratio_min=0.6)


# ---------------------------------------------------------------- masks, the student and the teacher


def test_block_masks_follow_torchs_seed_and_leave_pythons_random_alone():
    random.seed(5)
    expected = random.random()
    random.seed(5)
    torch.manual_seed(3)
    a = draw_block_mask(16, (8, 4), 0.5, (0.1, 0.5))
    assert random.random() == expected
    torch.manual_seed(3)
    assert torch.equal(a, draw_block_mask(16, (8, 4), 0.5, (0.1, 0.5)))
    counts = a.flatten(1).sum(1)
    assert int((counts > 0).sum()) <= 8 and int(counts.max()) <= 16  # half the images, <= 0.5 of 32 patches
    assert draw_block_mask(8, (4, 2), 0.5, (0.1, 0.5)).shape == (8, 4, 2)  # a grid smaller than a block


def test_student_and_teacher_are_lightlys_masked_vit_and_timms_vit_on_local_crops():
    torch.manual_seed(0)
    task = DINOv2(local_crops=1, **SMALL)
    model = PretextModel(create_backbone("vit_tiny_patch16_224", in_chans=1, num_classes=1, image_size=SIZE),
                         task).eval()
    batch = task.prepare(images(2), torch.zeros(2))
    g1, g2, local, mask = batch.inputs
    assert local.shape == (2, 1, 32, 16) and mask.shape == (4, 4, 2) and mask.dtype == torch.bool
    mask = torch.zeros_like(mask)
    mask[0, 1:3, 0], mask[3, 0, 1] = True, True  # some patches of each global view
    with torch.no_grad():
        outputs = model([g1, g2, local, mask])
    assert len(outputs) == 3 + 3 + 3
    # the reference: lightly's MaskedVisionTransformerTIMM on the same ViT (non-dynamic: its own
    # position embedding), features[mask] into the heads, as lightly's DINOv2 example
    vit = copy.deepcopy(model.backbone)
    lightly_vit = MaskedVisionTransformerTIMM(vit, pos_embed_initialization="skip", weight_initialization="skip")
    token_mask = torch.cat([torch.zeros(4, 1, dtype=torch.bool), mask.flatten(1)], dim=1)
    head = model.head
    with torch.no_grad():
        features = lightly_vit.encode(torch.cat([g1, g2]), mask=token_mask)
        unmasked = lightly_vit.encode(torch.cat([g1, g2]))
        # a local crop: timm's own ViT with dynamic_img_size resamples its position embedding
        dynamic = timm.create_model("vit_tiny_patch16_224", in_chans=1, num_classes=1, img_size=SIZE,
                                    dynamic_img_size=True)
        dynamic.load_state_dict(vit.state_dict())
        local_cls = dynamic.eval().forward_features(local)[:, 0]
        want_student = [*head.dino_head(features[:, 0]).chunk(2), head.dino_head(local_cls),
                        head.ibot_head(features[token_mask]), features[:, 0]]
        want_teacher = [*head.dino_head(unmasked[:, 0]).chunk(2), head.ibot_head(unmasked[token_mask])]
    assert head.ibot_head is not None and outputs[3].shape == (3, 16)  # 3 masked patches
    for got, want in zip(outputs[:5] + outputs[6:], want_student + want_teacher):
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert torch.equal(outputs[5], mask)
    # iBOT shares one head for the [CLS] and the patch tokens
    assert PretextModel(create_backbone("test_vit", in_chans=1, num_classes=1, image_size=SIZE),
                        IBOT(**SMALL)).head.ibot_head is None


def test_the_teacher_is_a_separate_copy_moved_by_the_momentum_update():
    torch.manual_seed(0)
    task = IBOT(momentum=0.9, **SMALL)
    model = PretextModel(create_backbone("test_vit", in_chans=1, num_classes=1, image_size=SIZE), task).train()
    student, teacher = list(model.head.parameters()), model.teacher_parameters()
    assert len(student) == len(teacher) and all(torch.equal(s, t) for s, t in zip(student, teacher))
    assert not any(t.requires_grad for t in teacher) and model.teacher_head.encoder.vit is not model.backbone
    assert model.head.encoder.vit is model.backbone  # the student trains the downstream backbone
    batch = task.prepare(images(), torch.zeros(4))
    outputs = model(batch.inputs)
    assert all(o.requires_grad for o in outputs[:7]) and not any(o.requires_grad for o in outputs[9:])
    task.loss(outputs).backward()
    assert all(t.grad is None for t in teacher)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    old = [t.detach().clone() for t in teacher]
    model.start_teacher(10)
    model.after_step()
    m = cosine_schedule(0, 10, 0.9, 1.0)
    for t, s, o in zip(teacher, student, old):
        assert torch.allclose(t, m * o + (1 - m) * s, atol=1e-6)
    assert not all(torch.equal(t, o) for t, o in zip(teacher, old))


# ---------------------------------------------------------------- contract, training, resume, refusal


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_contract_and_a_few_steps_lower_the_loss(name):
    check_pretext(name, **SMALL)
    torch.manual_seed(0)
    task = TASKS[name](**SMALL)
    model = PretextModel(create_backbone("test_vit", in_chans=1, num_classes=1, image_size=SIZE), task).train()
    batch = task.prepare(images(8), torch.zeros(8))  # one batch, its views and mask fixed
    before, after = losses_before_and_after(task, model, batch, steps=10)
    assert after < 0.9 * before, (before, after)


def test_a_fold_killed_after_a_pretext_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    """The teacher (in the pretext network) and both centres (the task's losses) come back."""
    cfg = build_config("smoke", flags={"pretext": "dinov2", "transfer": "finetune", "out": str(tmp_path),
                                       "model.backbone": "test_vit"},
                       sets=["train.checkpoint_every=1", "train.pretext_epochs=2", "train.epochs=1",
                             "params.dinov2.hidden_dim=32", "params.dinov2.out_dim=16",
                             "params.dinov2.bottleneck_dim=8", *TINY_DATA[1::2]])
    run = prepare_run(cfg)
    uninterrupted = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU)
    killed = MemoryStore(kill_at=1)
    with pytest.raises(Killed):
        train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=killed)
    assert killed.saves == [("pretext", 1)]
    resumed = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=MemoryStore(blob=killed.blob))
    assert_same_fold(resumed, uninterrupted)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_a_cnn_backbone_is_one_line_and_exit_2_before_anything_is_written(tmp_path, name):
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "--pretext", name, "--transfer", "finetune", "--profile", "smoke",
                                       "--backbone", "resnet18", "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: pretext {name} needs a ViT backbone (timm vision_transformer, e.g. vit_tiny_patch16_224); "
        "got resnet18")
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), TASKS[name]())


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_smoke_fold_pretrains_and_finetunes_vit_tiny(tmp_path, name):
    result = CliRunner().invoke(main, ["run", "--pretext", name, "--transfer", "finetune", "--profile", "smoke",
                                       "--backbone", "vit_tiny_patch16_224", "--fold", "0", "--out", str(tmp_path),
                                       "--quiet", "--set", "train.epochs=1", *TINY_DATA])
    assert result.exit_code == 0, result.output
    fold = tmp_path / f"{name}-finetune" / "folds" / "0"
    assert 0.0 <= json.loads((fold / "metrics.json").read_text())["auc"] <= 1.0
    record = torch.load(fold / "model.pt", weights_only=True)
    assert record["backbone"] == "vit_tiny_patch16_224" and record["image_size"] == list(SIZE)
    fresh = build_classifier(record["backbone"], record["architecture"], image_size=record["image_size"])
    fresh.load_state_dict(record["state_dict"], strict=True)
