"""End to end through the CLI: a smoke TSBN run writes the whole run-directory contract, and
user errors end with one clear line and a non-zero exit."""
import hashlib
import io
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from ssl_bench.cli import main
from ssl_bench.experiment.metrics import threshold_statistics
from ssl_bench.experiment.operating_point import degenerate_reason


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(
        main, ["run", "--pretext", "gsim", "--transfer", "collab", "--profile", "smoke", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    return out / "gsim-collab-unet", result.output


def test_run_directory_contract(smoke_run):
    run, output = smoke_run
    assert "profile smoke" in output and "pooled out-of-fold AUC" in output
    for name in ("config.yaml", "env.json", "summary.json", "folds.csv"):
        assert (run / name).is_file(), name
    env = json.loads((run / "env.json").read_text())
    assert {"ssl_bench", "torch", "timm", "git_commit", "device"} <= set(env)
    folds = pd.read_csv(run / "folds.csv")
    pooled = []
    for k in range(5):
        fold = run / "folds" / str(k)
        metrics = json.loads((fold / "metrics.json").read_text())
        assert set(metrics) == {"accuracy", "sensitivity", "specificity", "youden", "f1", "auc",
                                "op_threshold", "op_accuracy", "op_sensitivity", "op_specificity",
                                "degenerate", "label_fraction", "n_train_images", "n_train_patients",
                                "epochs", "pretext_epochs", "predictions_sha256", "calibration"}
        assert metrics["predictions_sha256"] == hashlib.sha256((fold / "predictions.csv").read_bytes()).hexdigest()
        preds = pd.read_csv(fold / "predictions.csv", keep_default_na=False)
        assert list(preds.columns) == ["image_id", "patient_id", "label", "score", "laterality", "calibrated"]
        assert set(preds["laterality"]) <= {"L", "R"}
        at_op = threshold_statistics(preds["label"], preds["score"], metrics["op_threshold"])
        assert metrics["op_sensitivity"] == pytest.approx(at_op["sensitivity"])
        assert metrics["op_specificity"] == pytest.approx(at_op["specificity"])
        assert metrics["degenerate"] == degenerate_reason(preds["score"])
        assert set(preds["image_id"]) == set(folds.loc[folds["fold"] == k, "image_id"])
        recomputed = threshold_statistics(preds["label"], preds["score"])
        assert metrics["auc"] == pytest.approx(roc_auc_score(preds["label"], preds["score"]))
        for key, value in recomputed.items():
            assert metrics[key] == pytest.approx(value), key
        history = pd.read_csv(fold / "history.csv")  # one row per trained epoch of each stage
        assert list(history.columns) == ["stage", "epoch", "pretext", "ct", "bce", "lr", "seconds"]
        assert list(history["epoch"]) == [1, 2] and set(history["stage"]) == {"collab"}
        assert (history["lr"] == 1e-3).all() and (history["seconds"] > 0).all()
        assert history[["pretext", "ct", "bce"]].notna().all().all()
        state = torch.load(fold / "model.pt", weights_only=True)
        assert state["backbone"] == "test_resnet" and "state_dict" in state
        pooled.append(preds)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 5 and set(summary["mean"]) == set(summary["std"])
    pooled = pd.concat(pooled)
    assert summary["oof_auc"] == pytest.approx(roc_auc_score(pooled["label"], pooled["score"]))
    # pooled metrics clinicians read, against scikit-learn and pandas
    assert summary["pooled"]["auprc"] == pytest.approx(average_precision_score(pooled["label"], pooled["score"]))
    patients = pooled.groupby("patient_id").agg(label=("label", "max"), score=("score", "mean"))
    assert summary["pooled"]["patient_auc"] == pytest.approx(roc_auc_score(patients["label"], patients["score"]))
    breasts = pooled.groupby(["patient_id", "laterality"]).agg(label=("label", "max"), score=("score", "mean"))
    assert summary["pooled"]["breast_auc"] == pytest.approx(roc_auc_score(breasts["label"], breasts["score"]))
    flagged = {str(k): m["degenerate"] for k, m in enumerate(summary["per_fold"]) if m["degenerate"]}
    assert summary["degenerate_folds"] == flagged
    # no patient in two folds
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1


def test_config_yaml_reproduces_and_completed_folds_are_kept(smoke_run, tmp_path):
    run, _ = smoke_run
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["pretext"] == "gsim" and cfg["transfer"] == "collab" and cfg["profile"] == "smoke"
    before = {k: (run / "folds" / str(k) / "model.pt").stat().st_mtime_ns for k in range(5)}
    result = CliRunner().invoke(main, ["run", "--config", str(run / "config.yaml"), "--out", str(run.parent), "--quiet"])
    assert result.exit_code == 0, result.output
    after = {k: (run / "folds" / str(k) / "model.pt").stat().st_mtime_ns for k in range(5)}
    assert before == after


def test_single_fold(tmp_path):
    result = CliRunner().invoke(
        main, ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--fold", "2",
               "--out", str(tmp_path), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "none-finetune"
    assert (run / "folds" / "2" / "metrics.json").is_file()
    assert not (run / "folds" / "0").exists() and not (run / "summary.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pretext", "gsmi", "--transfer", "collab"], "Did you mean 'gsim'"),
        (["--pretext", "gsim", "--transfer", "colab"], "'collab'"),
        (["--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["--set", "params.gsim.dd=1", "--pretext", "gsim"], "unknown option 'dd' for 'gsim'"),
        (["--image-size", "768by384"], "HEIGHTxWIDTH"),
        (["--pretext", "simclr", "--transfer", "collab"], "cannot use pretext 'simclr'"),
        (["--config", "/nonexistent/cfg.yaml"], "config file not found"),
    ],
)
def test_user_errors_one_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--out", str(tmp_path), "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--out", str(blocker / "runs"), "--quiet"])
    assert result.exit_code == 2 and "cannot write to output folder" in result.output


def test_console_script_typo_exits_nonzero_and_suggests():
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_bench.cli", "run", "--pretext", "gsmi", "--transfer", "collab"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "gsim" in proc.stderr and "Traceback" not in proc.stderr


def test_list_shows_components():
    result = CliRunner().invoke(main, ["list", "pretexts"])
    assert result.exit_code == 0
    assert "gsim" in result.output and "built-in" in result.output


def test_list_datasets_verbose_points_to_the_data_guide():
    """Issue 28, item 1: the verbose dataset listing names the guide to laying out one's own data,
    a file that exists; other listings do not."""
    from pathlib import Path

    from ssl_bench.cli.list_cmd import DATASETS_GUIDE

    line = "How to lay out your own data: docs/datasets.md"
    assert DATASETS_GUIDE == line
    assert (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").is_file()
    result = CliRunner().invoke(main, ["list", "datasets", "--verbose"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert line in result.output
    result = CliRunner().invoke(main, ["list", "pretexts", "--verbose"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and line not in result.output


def test_args_section_reads_google_style_entries():
    """Issue 28, item 4: the parser behind ``list --verbose``'s option descriptions: an entry's
    continuation lines join it on one line, the section ends at the next heading, and a docstring
    without an ``Args:`` section (or no docstring) gives nothing."""
    from ssl_bench.registry import args_section

    doc = """Summary line.

    Args:
        alpha: weight of the
            collaborative loss.
        size (int): side in pixels.

        n_benign, n_malignant: class counts.
        gamma:
            described on the next line only.

    Returns:
        beta: not an argument.
    """
    assert args_section(doc) == {
        "alpha": "weight of the collaborative loss.",
        "size": "side in pixels.",
        "n_benign": "class counts.",
        "n_malignant": "class counts.",
        "gamma": "described on the next line only.",
    }
    assert args_section("Summary line.\n\n    ``alpha`` is the weight.\n") == {}
    assert args_section(None) == {} and args_section("") == {}
    assert args_section("Summary.\n\nArgs:\n    x: the x.") == {"x": "the x."}  # a one-line opening


def test_list_verbose_describes_each_option_from_the_docstring():
    """Issue 28, item 4: ``list --verbose`` shows each option's description from the component's
    ``Args:`` section beside its default, on one line, and nothing where none is documented."""
    from ssl_bench.cli.list_cmd import _options_text
    from ssl_bench.pretext.simclr import SimCLR
    from ssl_bench.pretext.views import MammoViews
    from ssl_bench.registry import args_section

    result = CliRunner().invoke(main, ["list", "pretexts", "--verbose", "--filter", "simclr"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    described = {**args_section(MammoViews.__doc__), **args_section(SimCLR.__doc__)}  # SimCLR.options_from
    assert "(min, max)" in described["crop_scale"] and "\n" not in described["crop_scale"]  # a continuation
    assert "crop_scale" not in args_section(SimCLR.__doc__)  # documented once, in MammoViews
    for option, default in (("temperature", 0.5), ("crop_scale", 0.4), ("memory_bank_size", 0)):
        assert f"{option} = {default!r} — {described[option]}" in result.output

    class Partly:
        """A component documenting one of its two options.

        Args:
            a: the documented one,
                on two lines.
        """

        def __init__(self, a: int = 1, b: int = 2):
            """Builds it.

            Args:
                b:
            """

    assert _options_text("pretexts", Partly).plain.splitlines() == ["a = 1 — the documented one, on two lines.", "b = 2"]


def test_builtin_components_describe_their_options():
    """Issue 28, item 4: every option a user sets on a built-in pretext, transfer, network or
    dataset (the synthetic ones aside) is described in its ``Args:`` section."""
    from ssl_bench.cli.list_cmd import option_descriptions
    from ssl_bench.components import user_options
    from ssl_bench.registry import REGISTRIES

    missing = []
    for kind in ("pretexts", "transfers", "networks", "datasets"):
        registry = REGISTRIES[kind]
        for name in registry.names():
            if registry.entry(name).origin != "built-in" or name.startswith("synthetic"):
                continue
            obj = registry.get(name)
            described = option_descriptions(obj)
            missing += [f"{kind}/{name}.{o}" for o in user_options(kind, obj) if not described.get(o)]
    assert not missing, missing


def test_run_help_gives_each_profiles_defaults():
    """Issue 15, case 10: the help said "the profile's" without saying what that is."""
    from ssl_bench.config import PROFILES

    result = CliRunner().invoke(main, ["run", "--help"], env={"COLUMNS": "100"})
    flat = "".join(result.output.split())
    for profile, values in PROFILES.items():
        for key in ("model.backbone", "train.epochs", "train.pretext_epochs", "train.batch_size"):
            assert f"{values[key]}in{profile}" in flat, (profile, key)
        height, width = values["data.image_size"]
        assert f"{height}x{width}in{profile}" in flat


def test_output_to_a_file_is_not_cut_at_80_columns():
    """Issue 15, case 7: tables written to a pipe or a log were cut at rich's 80 columns."""
    from ssl_bench.registry import PRETEXTS, summary

    result = CliRunner().invoke(main, ["list", "pretexts"], env={"COLUMNS": None})
    assert result.exit_code == 0
    longest = max((summary(PRETEXTS.get(n)) for n in PRETEXTS.names()), key=len)
    assert len(longest) > 80 and longest in result.output  # on one line, whole


def test_the_run_table_shows_the_operating_threshold_as_a_probability():
    """A fold's operating threshold is the score from which predict calls an image malignant: a
    probability (0.777), not a percentage (77.74) like the metrics beside it."""
    from rich.console import Console

    from ssl_bench.cli.run_cmd import metrics_table
    fold = {**{m: 0.5 for m in ("accuracy", "sensitivity", "specificity", "youden", "f1", "auc")},
            "op_threshold": 0.7774, "op_sensitivity": 0.7, "op_specificity": 0.81}
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(metrics_table("t", {0: fold}, None))
    row = next(line for line in console.export_text().splitlines() if line.strip().startswith("│ 0"))
    cells = [c.strip() for c in row.strip().split("│")[1:-1]]  # fold, metrics, op thr, op sens, op spec, flag
    assert cells[-4:-1] == ["0.777", "70.00", "81.00"]


def test_run_prints_the_pooled_auc_with_its_clustered_interval(smoke_run):
    """Beside the pooled AUC, its 95% interval with patients as clusters, as the leaderboard gives
    it (Obuchowski 1997), from the run's own predictions."""
    from ssl_bench.report.stats import clustered_auc_confidence_interval

    run, output = smoke_run
    pred = pd.concat([pd.read_csv(f) for f in sorted((run / "folds").glob("*/predictions.csv"))])
    auc, lo, hi = clustered_auc_confidence_interval(pred["label"].to_numpy(), pred["score"].to_numpy(),
                                                    pred["patient_id"].astype(str).to_numpy())
    assert f"pooled out-of-fold AUC {auc:.4f} [{lo:.3f}, {hi:.3f}] (95% CI, patients as clusters)" in " ".join(output.split())
