"""``ssl-bench predict`` on a run trained on a generated INbreast tree: every fold model scores new
DICOM and PNG files with the run's own preprocessing; bad inputs are one clear error."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ssl_bench.cli import main

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
    assert list(table.columns) == ["file", "p_malignant", "threshold", "malignant", "fold_0", "fold_1"]
    thresholds = [json.loads((run / "folds" / str(k) / "metrics.json").read_text())["op_threshold"] for k in (0, 1)]
    assert np.allclose(table["threshold"], np.mean(thresholds))  # the folds' operating points
    assert (table["malignant"] == (table["p_malignant"] >= table["threshold"])).all()
    assert len(table) == 3
    assert ((table[["fold_0", "fold_1"]] >= 0) & (table[["fold_0", "fold_1"]] <= 1)).all().all()
    assert np.allclose(table["p_malignant"], table[["fold_0", "fold_1"]].mean(axis=1))
    as_json = json.loads(invoke("predict", "--run", run, dicoms[0], "--format", "json").output)
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
    assert full.exit_code == 0 and full.stdout.endswith("]\n") and full.stderr == ""
    (row,) = json.loads(full.stdout)
    assert set(row) == {"file", "p_malignant", "threshold", "malignant", "fold_0", "fold_1"}
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    shutil.rmtree(partial / "folds" / "1")
    result = invoke("predict", "--run", partial, dicom, "--format", "json")
    assert result.exit_code == 0, result.output
    assert " ".join(result.stderr.split()).startswith(
        f"warning: {partial} is partial: 1 of 2 folds have a trained model (folds 0); probabilities average those")
    (row,) = json.loads(result.stdout)
    assert set(row) == {"file", "p_malignant", "threshold", "malignant", "fold_0"}
    assert row["p_malignant"] == row["fold_0"]
    (partial / "folds" / "0" / "model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    malformed = invoke("predict", "--run", partial, dicom)
    assert malformed.exit_code == 2 and "not a ssl-bench model file" in malformed.output, malformed.output
    assert len(malformed.output.strip().splitlines()) == 1
    (partial / "config.yaml").write_bytes(bytes(range(256)) * 4)
    binary = invoke("predict", "--run", partial, dicom)
    assert binary.exit_code == 2 and "not a YAML text file" in binary.output, binary.output
    assert len(binary.output.strip().splitlines()) == 1 and "Traceback" not in binary.output
