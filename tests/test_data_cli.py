"""``ssl-bench data synth|prepare|verify`` end to end on generated trees."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from click.testing import CliRunner

from _dicom_factory import truncate
from ssl_bench.cli import main
from ssl_bench.data.inbreast import INbreast

pytest.importorskip("ssl_bench.data.synthetic_mammo")

COHORT = ["--set", "params.synthetic.n_patients=6", "--set", "params.synthetic.n_benign=10",
          "--set", "params.synthetic.n_malignant=4"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def flat(text: str) -> str:
    """Output without whitespace: rich wraps long paths at the terminal width."""
    return "".join(text.split())


@pytest.fixture
def tree(tmp_path):
    out = tmp_path / "tree"
    result = invoke("data", "synth", "--format", "dicom", "--out", out, "--image-size", "64x32", "--compress", "rle", *COHORT)
    assert result.exit_code == 0, result.output
    assert "wrote 14 images (dicom, inbreast, 64x32)" in result.output
    return out


def opts(tree, tmp_path, *more):
    return ["--dataset", "inbreast", "--data-root", tree, "--image-size", "32x16",
            "--cache-dir", tmp_path / "cache", "--workers", "1", *more]


def test_synth_dicom_tree_is_a_valid_inbreast_release(tree):
    raw = (tree / "INbreast.csv").read_bytes()
    assert raw.startswith(b"Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\r\n")
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == 15 and b"\n" not in raw.replace(b"\r\n", b"")
    sheet = pd.read_csv(tree / "INbreast.csv", sep=";", dtype=str)
    assert set(sheet["Patient ID"]) == {"removed"} and set(sheet["Bi-Rads"]) <= {"1", "2", "4a", "4b", "4c", "5", "6"}
    files = sorted((tree / "AllDICOMs").glob("*.dcm"))
    assert len(files) == 14
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "MG" and ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 14
    assert ds.file_meta.TransferSyntaxUID.name == "RLE Lossless"
    assert ds.ImageLaterality in ("L", "R") and ds.ViewPosition in ("CC", "MLO")
    assert files[0].name.startswith(f"{sheet['File Name'][0]}_{ds.PatientID}_MG_{ds.ImageLaterality}_")
    table, problems = INbreast(root=str(tree)).scan()
    assert problems == [] and len(table) == 14 and int(table["label"].sum()) == 4 and table["patient_id"].nunique() == 6


def test_synth_round_trip_keeps_the_canonical_images(tree, tmp_path):
    from ssl_bench.data.synthetic_mammo import generate

    table, images = generate(image_size=(64, 32), n_patients=6, n_benign=10, n_malignant=4, seed=0)
    loaded = INbreast(root=str(tree), image_size=(64, 32), cache_dir=str(tmp_path / "c"), workers=1).load()
    assert list(loaded.labels) == list(table["label"])
    for original, back in zip(images.astype(np.float32), loaded.images.astype(np.float32)):
        # cropping and min-max change the scale, not the side: chest wall left in both
        assert original[:, :16].sum() > original[:, 16:].sum()
        assert back[:, :16].sum() > back[:, 16:].sum()  # (phantom v3: large masses either side)
        profile = original.mean(0)
        assert np.corrcoef(profile, back.mean(0))[0, 1] > np.corrcoef(profile, back.mean(0)[::-1])[0, 1]


def test_prepare_twice_then_verify(tree, tmp_path):
    first = invoke("data", "prepare", *opts(tree, tmp_path))
    assert first.exit_code == 0, first.output
    for word in ("images", "14", "benign (0)", "10", "malignant (1)", "4", "patients", "6", "elapsed"):
        assert word in first.output
    assert list((tmp_path / "cache" / "shards").rglob("*.npy"))
    second = invoke("data", "prepare", *opts(tree, tmp_path))
    assert second.exit_code == 0 and "14" in second.output
    verified = invoke("data", "verify", *opts(tree, tmp_path))
    assert verified.exit_code == 0 and "no problems found" in verified.output


def test_bad_image_fail_skip_and_verify(tree, tmp_path):
    victim = sorted((tree / "AllDICOMs").glob("*.dcm"))[3]
    truncate(victim, 0.5)
    (tree / "AllDICOMs" / "12345678_ffff_MG_L_CC_ANON.dcm").write_bytes(victim.read_bytes())
    failed = invoke("data", "prepare", *opts(tree, tmp_path))
    assert failed.exit_code == 2
    assert failed.output.lstrip().startswith("error: 2 bad input(s)")
    assert flat("12345678_ffff_MG_L_CC_ANON.dcm: no row in INbreast.csv has File Name 12345678") in flat(failed.output)
    assert flat(f"{victim.name}: truncated file") in flat(failed.output)  # sheet and decode problems in one list
    skipped = invoke("data", "prepare", *opts(tree, tmp_path, "--on-bad-image", "skip"))
    assert skipped.exit_code == 0, skipped.output
    assert "│images│13│" in flat(skipped.output)
    assert flat(f"{victim.name}: truncated file") in flat(skipped.output)
    verified = invoke("data", "verify", *opts(tree, tmp_path))
    assert verified.exit_code == 1
    assert "2 problem(s)" in verified.output and "│images│13│" in flat(verified.output)
    assert flat(victim.name) in flat(verified.output) and "12345678_ffff" in flat(verified.output)


def test_synth_png_and_user_errors(tmp_path):
    out = tmp_path / "png"
    result = invoke("data", "synth", "--out", out, "--image-size", "64x32", *COHORT)
    assert result.exit_code == 0, result.output
    assert (out / "labels.csv").is_file() and len(list((out / "images").glob("*.png"))) == 14
    bad = invoke("data", "synth", "--out", out, "--set", "params.synthetic.bogus=1")
    assert bad.exit_code == 2 and "unknownoption'bogus'" in flat(bad.output)
    bad = invoke("data", "synth", "--out", out, "--format", "png", "--layout", "inbreast")
    assert bad.exit_code == 2 and "notavailable" in flat(bad.output)
    bad = invoke("data", "prepare", "--dataset", "inbreast", "--data-root", tmp_path / "nowhere")
    assert bad.exit_code == 2 and "isnotafolder" in flat(bad.output)
    bad = invoke("data", "prepare", "--dataset", "inbrest", "--data-root", tmp_path)
    assert bad.exit_code == 2 and "Didyoumean'inbreast'" in flat(bad.output)
    bad = invoke("data", "verify", "--dataset", "inbreast", "--data-root", tmp_path, "--set", "params.inbreast.x=1")
    assert bad.exit_code == 2 and "unknownoption'x'for'inbreast'" in flat(bad.output)


def test_synth_shows_its_progress(tmp_path):
    """Issue 15, case 9: a large synthetic set was minutes of silence. In a terminal, one bar
    counts the images drawn and one the files written (both on stderr)."""
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "png"), "--image-size", "64x32",
                                       *COHORT], env={"TTY_COMPATIBLE": "1", "FORCE_COLOR": "1", "COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    assert "drawing images" in result.stderr and "writing png files" in result.stderr
    assert "14/14" in result.stderr and "wrote 14 images" in result.stdout


def test_synth_help_example_runs(tmp_path):
    """Issue 28, item 7: the help's example, ``--set params.synthetic.n_patients=20`` alone, failed
    (20 patients need 40-80 images, the default counts are 387). The example is read out of the
    help itself and run as it is, so help and code cannot drift apart."""
    import re

    shown = invoke("data", "synth", "--help")
    assert shown.exit_code == 0, shown.output
    example = re.search(r"e\.g\. ((?:--set \S+ ?)+)", " ".join(shown.output.split()))
    assert example, shown.output
    args = example.group(1).split()
    options = dict(item.split("=", 1) for item in args[1::2])
    assert args[::2] == ["--set"] * len(options) and "params.synthetic.n_patients" in options
    out = tmp_path / "example"
    result = invoke("data", "synth", "--out", out, "--image-size", "64x32", *args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "labels.csv")
    n_images = int(options["params.synthetic.n_benign"]) + int(options["params.synthetic.n_malignant"])
    assert len(table) == n_images == len(list((out / "images").glob("*.png")))
    assert table["patient_id"].nunique() == int(options["params.synthetic.n_patients"])
    assert f"wrote {n_images} images" in result.output
