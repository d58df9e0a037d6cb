"""Files get the permissions the umask gives, as ``open()`` would create them (``0o666`` less the
umask), whichever writer made them: atomic or not, text, JSON, CSV, torch files, cache shards,
a report's HTML. (Atomic writes made ``0o600`` files whatever the umask.)"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.fileio import atomic_write, atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    """Sets the process's umask for the test, then restores it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def created_by_open(folder: Path) -> int:
    """The mode a plain ``open(..., "w")`` gives a new file under the current umask: the reference."""
    probe = folder / "reference"
    with open(probe, "w"):
        pass
    try:
        return mode(probe)
    finally:
        probe.unlink()


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_open_gives(tmp_path, umask, mask, expected):
    umask(mask)
    assert created_by_open(tmp_path) == expected
    atomic_write_text(tmp_path / "a.txt", "text")
    atomic_write_bytes(tmp_path / "b.bin", b"bytes")
    atomic_write(tmp_path / "sub" / "c.bin", lambda fh: fh.write(b"streamed"))
    atomic_write_text(tmp_path / "a.txt", "replaced")  # over an existing file: the new file's mode
    assert {p.name: mode(p) for p in tmp_path.rglob("*") if p.is_file()} == \
        {"a.txt": expected, "b.bin": expected, "c.bin": expected}
    assert (tmp_path / "a.txt").read_text() == "replaced" and (tmp_path / "sub" / "c.bin").read_bytes() == b"streamed"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_run_and_its_report_get_the_mode_open_gives(tmp_path, umask, mask):
    umask(mask)
    expected = created_by_open(tmp_path)
    assert expected == 0o666 & ~mask
    out, cache = tmp_path / "out", tmp_path / "cache"
    # a process of its own (it inherits the umask): this one keeps the images it decoded in memory,
    # and a fresh process writes the cache's shards into the empty cache folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "run", "--pretext", "gsim", "--transfer",
                             "finetune", "--profile", "smoke", "--folds", "2", "--quiet", "--out", str(out),
                             "--set", f"data.cache_dir={cache}"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    run = out / "gsim-finetune"
    html = tmp_path / "report" / "leaderboard.html"
    report = CliRunner().invoke(main, ["report", str(run), "--format", "html", "--out", str(html),
                                       "--n-boot", "100"])
    assert report.exit_code == 0, report.output
    named = [run / "config.yaml", run / "summary.json", run / "folds" / "0" / "predictions.csv",
             run / "folds" / "0" / "model.pt", html]
    assert {str(p): mode(p) for p in named} == {str(p): expected for p in named}
    # and every other file of the run directory and the image cache (shards, their index)
    written = [p for folder in (out, cache) for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in written)
    assert {str(p): mode(p) for p in written} == {str(p): expected for p in written}
