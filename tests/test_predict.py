"""``ssl-bench predict`` on a run trained on a generated INbreast tree: every fold model scores new
DICOM and PNG files with the run's own preprocessing; bad inputs are one clear error; a smoke run,
a run degenerate in every fold and an input that is not one mammogram view are one warning line
each, and the files are still scored."""
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from ssl_bench.cli import main
from ssl_bench.data.image_checks import not_one_view
from ssl_bench.data.synthetic_mammo import generate
from ssl_bench.experiment.rundir import RunDir

COHORT = ["--set", "params.synthetic.n_patients=8", "--set", "params.synthetic.n_benign=12",
          "--set", "params.synthetic.n_malignant=6"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    tree = base / "tree"
    made = invoke("data", "synth", "--format", "dicom", "--out", tree, "--image-size", "96x48", "--seed", "3", *COHORT)
    assert made.exit_code == 0, made.output
    run = invoke("run", "--dataset", "inbreast", "--data-root", tree, "--profile", "smoke", "--folds", "2",
                 "--out", base / "runs", "--quiet", "--set", f"data.cache_dir={base / 'cache'}")
    assert run.exit_code == 0, run.output
    return tree, base / "runs" / "none-finetune"


def test_predict_scores_new_dicom_and_png_files(trained, tmp_path):
    tree, run = trained
    dicoms = sorted((tree / "AllDICOMs").glob("*.dcm"))[:2]
    png = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((120, 60)) * 65535).astype(np.uint16)).save(png)
    out = tmp_path / "scores.csv"
    result = invoke("predict", "--run", run, *dicoms, png, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["file", "p_malignant", "p_calibrated", "threshold", "malignant", "fold_0", "fold_1"]
    thresholds = [json.loads((run / "folds" / str(k) / "metrics.json").read_text())["op_threshold"] for k in (0, 1)]
    assert np.allclose(table["threshold"], np.mean(thresholds))  # the folds' operating points
    assert (table["malignant"] == (table["p_malignant"] >= table["threshold"])).all()
    assert len(table) == 3
    assert ((table[["fold_0", "fold_1"]] >= 0) & (table[["fold_0", "fold_1"]] <= 1)).all().all()
    assert np.allclose(table["p_malignant"], table[["fold_0", "fold_1"]].mean(axis=1))
    as_json = json.loads(invoke("predict", "--run", run, dicoms[0], "--format", "json").stdout)
    assert as_json[0]["p_malignant"] == pytest.approx(table["p_malignant"][0], rel=1e-6)


def test_predict_user_errors(trained, tmp_path):
    tree, run = trained
    missing = invoke("predict", "--run", run, tmp_path / "nope.dcm")
    assert missing.exit_code == 2 and "nope.dcm: file not found" in missing.output
    corrupt = tmp_path / "broken.dcm"
    corrupt.write_bytes(b"DICM" * 10)
    bad = invoke("predict", "--run", run, corrupt)
    assert bad.exit_code == 2 and "broken.dcm" in bad.output and "Traceback" not in bad.output
    not_a_run = invoke("predict", "--run", tmp_path, sorted((tree / "AllDICOMs").glob("*.dcm"))[0])
    assert not_a_run.exit_code == 2 and "not a run directory" in not_a_run.output


def test_predict_json_on_a_partial_run_and_a_binary_config(trained, tmp_path):
    """Issue 15, cases 4, 6 and 10: JSON ends with a newline and names the probability
    p_malignant; a run with a fold missing warns and averages the folds it has; a malformed
    model.pt and a config.yaml that is not text are one line each."""
    import shutil

    tree, run = trained
    dicom = sorted((tree / "AllDICOMs").glob("*.dcm"))[0]
    full = invoke("predict", "--run", run, dicom, "--format", "json")
    assert full.exit_code == 0 and full.stdout.endswith("]\n") and "is partial" not in full.stderr
    (row,) = json.loads(full.stdout)
    assert set(row) == {"file", "p_malignant", "p_calibrated", "threshold", "malignant", "fold_0", "fold_1"}
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    shutil.rmtree(partial / "folds" / "1")
    result = invoke("predict", "--run", partial, dicom, "--format", "json")
    assert result.exit_code == 0, result.output
    assert " ".join(result.stderr.split()).startswith(
        f"warning: {partial} is partial: 1 of 2 folds have a trained model (folds 0); probabilities average those")
    (row,) = json.loads(result.stdout)
    assert set(row) == {"file", "p_malignant", "p_calibrated", "threshold", "malignant", "fold_0"}
    assert row["p_malignant"] == row["fold_0"]
    (partial / "folds" / "0" / "model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    malformed = invoke("predict", "--run", partial, dicom)
    assert malformed.exit_code == 2 and "not a ssl-bench model file" in malformed.output, malformed.output
    assert len(malformed.output.strip().splitlines()) == 1
    (partial / "config.yaml").write_bytes(bytes(range(256)) * 4)
    binary = invoke("predict", "--run", partial, dicom)
    assert binary.exit_code == 2 and "not a YAML text file" in binary.output, binary.output
    assert len(binary.output.strip().splitlines()) == 1 and "Traceback" not in binary.output


# ---- guardrails (issue 28, item 5) ----------------------------------------------------------------

SMOKE = ("was trained with the smoke profile (a few epochs on tiny images, to test the toolkit): "
         "its scores are a smoke test, not a model")
DEGENERATE = ("is degenerate: every fold's held-out scores were constant or nearly all on one side of 0.5 "
              "({}), so these probabilities and calls say little about malignancy")
NOT_ONE_VIEW = "does not look like one mammogram view ({}); it is scored as one, but its score may mean nothing"


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def variant(run, dest, profile="quick", degenerate=("", "")):
    """A copy of ``run`` as if trained with ``profile`` and with these degenerate reasons recorded
    for folds 0 and 1 (``None``: the key absent, as in runs written before it was recorded)."""
    shutil.copytree(run, dest)
    config = yaml.safe_load((dest / "config.yaml").read_text())
    config["profile"] = profile
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for k, why in enumerate(degenerate):
        path = dest / "folds" / str(k) / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics.pop("degenerate")
        if why is not None:
            metrics["degenerate"] = why
        path.write_text(json.dumps(metrics))
    return dest


@pytest.fixture(scope="module")
def smoke_views(tmp_path_factory):
    """The 60 images of a smoke-sized generated cohort as 16-bit PNGs, and a montage of its first
    four views side by side (64x128), as a screening 4-view display would show them."""
    base = tmp_path_factory.mktemp("views")
    _, images = generate(image_size=(64, 32), n_patients=24, n_benign=40, n_malignant=20)
    paths = []
    for i, image in enumerate(images):
        paths.append(base / f"view_{i:02d}.png")
        Image.fromarray(np.round(image.astype(np.float64) * 65535).astype(np.uint16)).save(paths[-1])
    montage = base / "montage.png"
    side_by_side = np.concatenate(list(images[:4]), axis=1)
    Image.fromarray(np.round(side_by_side.astype(np.float64) * 65535).astype(np.uint16)).save(montage)
    return images, paths, montage


def test_not_one_view_criterion(smoke_views):
    """No false alarm on any of the 60 single views; a 4-view montage has several breast-sized
    regions; a view turned on its side is far wider than tall; a blank image shows nothing."""
    images, _, _ = smoke_views
    views = [image.astype(np.float32) for image in images]
    assert [not_one_view(v) for v in views] == [""] * 60
    assert not_one_view(np.concatenate(views[:4], axis=1)).endswith(
        "separate breast-sized regions, as in several views side by side")
    assert "times as wide as tall" in not_one_view(np.ascontiguousarray(np.rot90(views[0])))
    assert not_one_view(np.zeros((64, 32), np.float32)) == "nothing stands out from the background"


def test_predict_warns_about_a_smoke_run_and_a_degenerate_one(trained, tmp_path):
    """The smoke run of this module: one line saying its scores are a smoke test, and one line
    naming every fold's degenerate reason when all its folds are degenerate; scored all the same.
    The same run as if trained with another profile and with good folds warns about nothing; one
    good fold of two is enough not to call it degenerate; a fold whose metrics.json predates the
    degenerate field is judged on its predictions."""
    tree, run = trained
    dicom = sorted((tree / "AllDICOMs").glob("*.dcm"))[0]
    result = invoke("predict", "--run", run, dicom, "--format", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 1
    reasons = {k: RunDir(run).read_metrics(k)["degenerate"] for k in (0, 1)}
    expected = [f"warning: {run} {SMOKE}"]
    if all(reasons.values()):
        expected.append(f"warning: {run} " + DEGENERATE.format(f"fold 0: {reasons[0]}; fold 1: {reasons[1]}"))
    assert warnings_of(result) == expected

    fine = variant(run, tmp_path / "fine")
    clean = invoke("predict", "--run", fine, dicom, "--format", "json")
    assert clean.exit_code == 0 and clean.stderr == "", clean.output
    assert len(json.loads(clean.stdout)) == 1

    one_good = variant(run, tmp_path / "one-good", degenerate=("constant scores (0.5)", ""))
    assert invoke("predict", "--run", one_good, dicom).stderr == ""

    both = variant(run, tmp_path / "both", profile="smoke", degenerate=("100% of scores >= 0.5 (all malignant)", None))
    predictions = both / "folds" / "1" / "predictions.csv"
    pd.read_csv(predictions).assign(score=0.25).to_csv(predictions, index=False)
    flagged = invoke("predict", "--run", both, dicom, "--format", "csv")
    assert flagged.exit_code == 0, flagged.output
    assert warnings_of(flagged) == [
        f"warning: {both} {SMOKE}",
        f"warning: {both} " + DEGENERATE.format("fold 0: 100% of scores >= 0.5 (all malignant); "
                                                "fold 1: constant scores (0.25)")]
    assert len(pd.read_csv(io.StringIO(flagged.stdout))) == 1


def test_predict_warns_about_a_montage_only(trained, smoke_views, tmp_path):
    """A 4-view montage among the 60 single views of the smoke cohort: one warning line naming
    the montage, none for any single view, and all 61 files scored."""
    _, run = trained
    _, paths, montage = smoke_views
    fine = variant(run, tmp_path / "fine")
    out = tmp_path / "scores.csv"
    result = invoke("predict", "--run", fine, *paths, montage, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    (line,) = warnings_of(result)
    reason = NOT_ONE_VIEW.split("(")[0]
    assert line.startswith(f"warning: {montage} {reason}(") and "separate breast-sized regions" in line, line
    assert line.endswith("it is scored as one, but its score may mean nothing")
    table = pd.read_csv(out)
    assert table["file"].tolist() == [str(p) for p in (*paths, montage)]
    assert table["p_malignant"].between(0, 1).all()
