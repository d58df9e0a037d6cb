"""Sizes are bounded before anything is allocated or decoded: ``--image-size`` within
16..8192 a side (one line, exit 2, instead of an 18.6 GiB allocation traceback), and an input
file of more pixels than a mammogram has (a 140 KB PNG of 12000x12000 took 2.6 GiB to decode) is
refused from its header, undecoded, as one bad input naming the file: in ``predict`` (one line,
exit 2; Pillow's decompression bombs too), ``data verify`` and dataset loading (``on_bad_image``
fail or skip)."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image

from ssl_bench.cli import main
from ssl_bench.config import Config, ConfigError, build_config, load_yaml, validate
from ssl_bench.data.loading import build_dataset
from ssl_bench.data.preprocess import MAX_PIXELS_VARIABLE, MAX_SOURCE_PIXELS, check_source_pixels, load_image
from ssl_bench.errors import DataError
from ssl_bench.data.synthetic_mammo import generate

from _dicom_factory import make_dicom


def blank_png(path, height: int, width: int):
    """A valid 8-bit grayscale PNG of zeros, written row by row: a few hundred KB for any size
    (what a decompression bomb is)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 12000x12000 PNG (above our bound, below Pillow's error) and a 20000x20000 one (Pillow's
    DecompressionBombError)."""
    base = tmp_path_factory.mktemp("big")
    return blank_png(base / "big12k.png", 12000, 12000), blank_png(base / "bomb20k.png", 20000, 20000)


# ------------------------------------------------------------------------------ --image-size


@pytest.mark.parametrize("size", ["100000x100000", "8193x100", "100x8193", "15x32"])
def test_image_size_out_of_bounds_is_a_config_error(size):
    with pytest.raises(ConfigError, match=f"each side must be 16 to 8192 pixels, got {size}"):
        build_config("smoke", flags={"data.image_size": size})
    with pytest.raises(ConfigError, match="each side must be 16 to 8192 pixels"):
        build_config("smoke", sets=[f"data.image_size={size}"])


def test_image_size_bounds_hold_however_the_config_was_made(tmp_path):
    cfg = Config()
    cfg.data.image_size = (100000, 100000)
    with pytest.raises(ConfigError, match="data.image_size: each side must be 16 to 8192"):
        validate(cfg)
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  image_size: [100000, 100000]\n")
    with pytest.raises(ConfigError, match="each side must be 16 to 8192"):
        build_config("smoke", load_yaml(config))
    assert build_config("smoke", flags={"data.image_size": "8192x16"}).data.image_size == (8192, 16)


@pytest.mark.parametrize("command, out", [
    (["run", "--profile", "smoke"], "--out"),
    (["data", "prepare"], "--cache-dir"),
    (["data", "synth"], "--out"),
])
def test_image_size_out_of_bounds_is_one_line(tmp_path, command, out):
    result = CliRunner().invoke(main, [*command, "--image-size", "100000x100000", out, str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: --image-size: each side must be 16 to 8192 pixels, got 100000x100000"]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ input files


def test_the_bound_holds_every_real_mammogram_and_can_be_set(monkeypatch, tmp_path):
    for rows, columns in [(4500, 2800), (4096, 3328), (5928, 4728), (7111, 5431), (8192, 8192)]:
        check_source_pixels("m.dcm", rows, columns)  # INbreast, Hologic, Fuji, a film scan: never refused
    with pytest.raises(DataError, match=r"^m\.dcm: 12000x12000 pixels \(144 MP\) is more than the 67 MP"):
        check_source_pixels("m.dcm", 12000, 12000)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, str(12000 * 12000))
    check_source_pixels("m.dcm", 12000, 12000)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "many")
    with pytest.raises(DataError, match=f"{MAX_PIXELS_VARIABLE}='many': expected a number of pixels"):
        check_source_pixels("m.dcm", 10, 10)
    assert MAX_SOURCE_PIXELS == 8192 * 8192


def test_a_dicom_is_refused_from_its_header(tmp_path):
    path = make_dicom(tmp_path / "huge.dcm", np.zeros((32, 32)))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 12000  # the header claims 144 MP; its pixel data is never read
    ds.save_as(path)
    with pytest.raises(DataError, match=r"huge\.dcm: 12000x12000 pixels \(144 MP\) is more than the 67 MP"):
        load_image(path)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bounds") / "runs"
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--folds", "2", "--pretext", "none",
                                       "--transfer", "knn", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "none-knn"


def test_predict_refuses_an_oversized_file_and_a_bomb_in_one_line(smoke_run, big):
    large, bomb = big
    for path, reason in [(large, "12000x12000 pixels (144 MP) is more than the 67 MP an image may have"),
                         (bomb, "not decoded: Image size (400000000 pixels) exceeds limit")]:
        result = CliRunner().invoke(main, ["predict", "--run", str(smoke_run), str(path)])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
        assert len(errors) == 1 and errors[0].startswith(f"error: cannot read an image: {path}: {reason}")
        assert "DecompressionBombWarning" not in result.output and "Traceback" not in result.output


def _pool(root, big_file):
    """A folder dataset of three small images and the 12000x12000 PNG."""
    root.mkdir()
    _, images = generate(image_size=(64, 32), seed=0, n_patients=1, n_benign=2, n_malignant=1)
    for i, image in enumerate(images):
        Image.fromarray((np.asarray(image, dtype=np.float32) * 255).astype(np.uint8)).save(root / f"s{i}.png")
    (root / "big.png").write_bytes(big_file.read_bytes())
    return root


def test_data_verify_and_loading_refuse_an_oversized_file(tmp_path, big):
    root = _pool(tmp_path / "pool", big[0])
    verify = CliRunner().invoke(main, ["data", "verify", "--dataset", "folder", "--data-root", str(root),
                                       "--image-size", "64x32", "--cache-dir", str(tmp_path / "cache"),
                                       "--workers", "1"])
    assert verify.exit_code == 1, verify.output
    assert f"  - {root / 'big.png'}: 12000x12000 pixels (144 MP) is more than the 67 MP" in verify.output
    assert "1 problem(s)" in verify.output

    def load(on_bad_image):
        cfg = build_config("smoke", flags={"data.dataset": "folder", "data.root": str(root),
                                           "data.cache_dir": str(tmp_path / "cache"), "data.workers": 1,
                                           "data.on_bad_image": on_bad_image})
        return build_dataset(cfg).load()

    with pytest.raises(DataError, match=r"(?s)1 bad input\(s\) in dataset 'folder'.*big\.png: 12000x12000 pixels"):
        load("fail")
    loaded = load("skip")
    assert len(loaded.samples) == 3 and [p.file for p in loaded.skipped] == [str(root / "big.png")]
