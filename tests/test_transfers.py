"""Transfer strategies' wiring: finetune's stage-2 head reset, multitask's summed loss, collab's
downstream loss with L_CT as a batch mean, and that every method of a bench shares one fold
assignment."""
import pandas as pd
import torch

from ssl_bench.bench.plan import load_plan
from ssl_bench.bench.runner import prepare_bench
from ssl_bench.testing import tiny_fit_context
from ssl_bench.training import stages
from ssl_bench.transfer import collaborative, finetune, multitask
from ssl_bench.transfer.collaborative import CollaborativeTransfer
from ssl_bench.transfer.finetune import FineTune
from ssl_bench.transfer.multitask import MultiTask


def test_finetune_stage2_gets_a_fresh_head_and_keeps_the_pretrained_body(monkeypatch):
    seen = {}
    real_pretext_stage, real_supervised_stage = stages.pretext_stage, stages.supervised_stage

    def spy_pretext_stage(ctx, model, epochs, stage="pretext"):
        real_pretext_stage(ctx, model, epochs, stage)
        body = model.backbone
        seen["after_pretext_head"] = body.get_classifier()
        seen["after_pretext_head_w"] = body.get_classifier().weight.detach().clone()
        seen["after_pretext_body"] = {k: v.clone() for k, v in body.state_dict().items() if not k.startswith("fc")}

    def spy_supervised_stage(ctx, backbone, epochs, stage="finetune"):
        seen["stage2_head"] = backbone.get_classifier()
        seen["stage2_head_w"] = backbone.get_classifier().weight.detach().clone()
        seen["stage2_body"] = {k: v.clone() for k, v in backbone.state_dict().items() if not k.startswith("fc")}
        real_supervised_stage(ctx, backbone, epochs, stage)

    monkeypatch.setattr(stages, "pretext_stage", spy_pretext_stage)
    monkeypatch.setattr(finetune, "supervised_stage", spy_supervised_stage)
    torch.manual_seed(0)
    classifier = FineTune().fit(tiny_fit_context("gsim"))
    assert seen["stage2_head"] is not seen["after_pretext_head"]  # a new module
    assert not torch.equal(seen["stage2_head_w"], seen["after_pretext_head_w"])  # freshly initialised
    assert seen["stage2_head"].out_features == 1
    for k, v in seen["after_pretext_body"].items():  # the pretext-trained body is what stage 2 starts from
        assert torch.equal(v, seen["stage2_body"][k]), k
    assert classifier.get_classifier() is seen["stage2_head"]


def test_finetune_with_no_pretext_skips_stage1(monkeypatch):
    calls = []
    monkeypatch.setattr(stages, "pretext_stage", lambda *a, **k: calls.append("pretext"))
    FineTune().fit(tiny_fit_context("none"))
    assert calls == []


def test_multitask_minimises_bce_plus_weighted_pretext_loss(monkeypatch):
    recorded = []
    real = multitask.multitask_loss

    def spy(bce, pretext_loss, weight):
        total = real(bce, pretext_loss, weight)
        recorded.append((bce.item(), pretext_loss.item(), weight, total.item()))
        return total

    monkeypatch.setattr(multitask, "multitask_loss", spy)
    ctx = tiny_fit_context("gsim", n_images=8, train__epochs=2)
    MultiTask(weight=0.3).fit(ctx)
    assert len(recorded) == 2 * ctx.steps_per_epoch()
    for bce, pre, weight, total in recorded:
        assert weight == 0.3
        assert abs(total - (bce + 0.3 * pre)) < 1e-5


def test_collab_downstream_loss_is_alpha_times_per_image_l_ct_plus_bce(monkeypatch):
    calls, optimised, reported = [], [], []
    real_loss, real_step = collaborative.collaborative_loss, collaborative.optimizer_step

    def spy_loss(p, d):
        out = real_loss(p, d)
        calls.append((p.detach().float(), d.detach().float(), out.detach()))
        return out

    def spy_step(optimizer, loss):
        optimised.append(loss.detach())
        real_step(optimizer, loss)

    monkeypatch.setattr(collaborative, "collaborative_loss", spy_loss)
    monkeypatch.setattr(collaborative, "optimizer_step", spy_step)
    ctx = tiny_fit_context("gsim", n_images=8, train__batch_size=4)
    real_run = ctx.loop.run

    def run(stage, epochs, step, after_epoch=None):
        def recording_step(x, y):
            out = step(x, y)
            reported.append({k: v.detach() for k, v in out.items()})
            return out

        return real_run(stage, epochs, recording_step, after_epoch)

    monkeypatch.setattr(ctx.loop, "run", run)
    proj_dim = 16
    CollaborativeTransfer(alpha=0.5, proj_dim=proj_dim, hidden_dim=32).fit(ctx)
    assert len(calls) == len(reported) == ctx.steps_per_epoch() == 2
    for i, ((p, d, l_ct), losses) in enumerate(zip(calls, reported)):
        assert p.shape == d.shape == (4, proj_dim)
        # L_CT and the reported "ct" are the per-image mean of the squared distances
        torch.testing.assert_close(l_ct, (p - d).square().sum(dim=1).mean())
        torch.testing.assert_close(losses["ct"], l_ct)
        assert l_ct.item() <= 4 * proj_dim  # a per-image bound (batch-normalised branches)
        # two optimiser steps per batch: the pretext's, then L_D = alpha * L_CT + L_BCE
        torch.testing.assert_close(optimised[2 * i], losses["pretext"])
        torch.testing.assert_close(optimised[2 * i + 1], 0.5 * losses["ct"] + losses["bce"])


def test_every_method_of_a_bench_shares_identical_folds(tmp_path):
    plan = load_plan("benchmarks/table2.yaml", "smoke", {"out": str(tmp_path)})
    runs, jobs, done = prepare_bench(plan, resume=False)
    assert [r.config.method for r in runs] == [
        "ResNet", "SimCLR", "CR-F-ResNet", "GM-F-ResNet", "GM-M-ResNet", "TSBN-U", "TSBN-R", "Non-spatial"]
    assert len(jobs) == 8 * 5 and done == 0
    first = pd.read_csv(runs[0].rundir.path / "folds.csv")
    for run in runs[1:]:
        assert (run.fold_of == runs[0].fold_of).all()
        pd.testing.assert_frame_equal(pd.read_csv(run.rundir.path / "folds.csv"), first)
