"""Tiny and blank images (issue 15, case 6: 1x1 and all-black images went through unnoticed): a
dataset load warns once, in one line, with the counts and the first ids, and ``ssl-bench data
verify`` counts them; generated PNG and DICOM files through the ``manifest`` dataset."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from _dicom_factory import make_dicom
from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.data import loading
from ssl_bench.data.image_checks import MIN_SIDE, check_images
from ssl_bench.errors import DataWarning

SMALL = {"tiny_1x1", "narrow_20x300", "dicom_16x16"}  # under MIN_SIDE px on a side
BLANK = {"black_90x60", "constant_90x60", "tiny_1x1"}  # one value everywhere (1x1: trivially)


def breast(shape, seed):
    """A bright half-ellipse on a dark background with texture: plenty of signal."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]]
    inside = (x / (0.8 * shape[1])) ** 2 + ((y - shape[0] / 2) / (0.45 * shape[0])) ** 2 <= 1
    return (inside * (20000 + 20000 * rng.random(shape))).astype(np.uint16)


def png(path, pixels):
    Image.fromarray(np.asarray(pixels, dtype=np.uint16)).save(path)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    rows = []
    for i in range(6):
        png(root / f"ok{i}.png", breast((90, 60), i))
        rows.append((f"ok{i}.png", i % 2, f"ok{i}"))
    png(root / "tiny.png", np.zeros((1, 1)))
    png(root / "narrow.png", breast((20, 300), 9))
    png(root / "black.png", np.zeros((90, 60)))
    png(root / "constant.png", np.full((90, 60), 700))
    make_dicom(root / "small.dcm", breast((16, 16), 7))
    rows += [("tiny.png", 0, "tiny_1x1"), ("narrow.png", 1, "narrow_20x300"), ("black.png", 0, "black_90x60"),
             ("constant.png", 1, "constant_90x60"), ("small.dcm", 0, "dicom_16x16")]
    lines = ["path,label,patient_id,image_id"] + [f"{p},{label},{iid},{iid}" for p, label, iid in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def config(tree, tmp_path):
    return build_config("smoke", flags={"data.dataset": "manifest", "data.root": str(tree),
                                        "data.cache_dir": str(tmp_path / "cache"), "data.workers": 1})


def test_small_and_blank_images_are_found(tree, tmp_path):
    loaded = loading.build_dataset(config(tree, tmp_path)).load()
    assert len(loaded.samples) == 11  # all of them load: they are warned about, not bad inputs
    checks = check_images(loaded.samples, loaded.images)
    assert set(checks.small) == SMALL and set(checks.blank) == BLANK
    assert MIN_SIDE == 32


def test_a_load_warns_once_in_one_line(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "_loaded", {})
    cfg = config(tree, tmp_path)
    with pytest.warns(DataWarning) as recorded:
        loading.load_dataset(cfg)
    (message,) = [str(w.message) for w in recorded if issubclass(w.category, DataWarning)]
    assert "\n" not in message
    assert message.startswith("dataset 'manifest': 3 images smaller than 32 px on a side: ")
    assert "; 3 images blank (all one value, nothing to learn): " in message
    named = message.split(": ", 2)[2]
    assert sum(i in named for i in SMALL | BLANK) == 5  # every id: 3 of each, tiny_1x1 in both
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        loading.load_dataset(cfg)  # the same dataset again in this process: no second warning


def test_verify_counts_them_and_a_clean_set_has_none(tree, tmp_path):
    args = ["data", "verify", "--dataset", "manifest", "--data-root", str(tree), "--image-size", "64x32",
            "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output  # not problems: the images load
    flat = "".join(result.output.split())
    assert "│small(<32pxaside)│3│" in flat and "│blank(onevalue)│3│" in flat and "│images│11│" in flat
    assert "warning: 3 images smaller than 32 px on a side" in result.output
    for name in ("tiny.png", "narrow.png", "black.png", "constant.png", "small.dcm"):
        (tree / name).unlink()
    keep = [line for line in (tree / "manifest.csv").read_text().splitlines() if line.startswith(("path", "ok"))]
    (tree / "manifest.csv").write_text("\n".join(keep) + "\n")
    clean = CliRunner().invoke(main, args, env={"COLUMNS": "250"})
    assert clean.exit_code == 0, clean.output
    flat = "".join(clean.output.split())
    assert "│small(<32pxaside)│0│" in flat and "│blank(onevalue)│0│" in flat
    assert "warning" not in clean.output
