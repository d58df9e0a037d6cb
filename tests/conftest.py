"""Shared test set-up: one temporary cache for the whole session (generated datasets are
cached there once), and torch limited to one thread (tiny tensors run faster that way)."""
from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from ssl_bench.cli import main


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("ssl_bench_cache")
    old = os.environ.get("SSL_BENCH_CACHE_DIR")
    os.environ["SSL_BENCH_CACHE_DIR"] = str(path)
    torch.set_num_threads(1)
    yield path
    if old is None:
        os.environ.pop("SSL_BENCH_CACHE_DIR", None)
    else:
        os.environ["SSL_BENCH_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def smoke_bench(tmp_path_factory):
    """Runs a bench file's text in the smoke profile with 3 folds; returns the output folder."""
    def run(text: str, name: str = "bench"):
        base = tmp_path_factory.mktemp(name)
        (base / "b.yaml").write_text(text)
        out = base / "out"
        result = CliRunner().invoke(main, ["bench", str(base / "b.yaml"), "--profile", "smoke", "--explain", "0", "--folds", "3",
                                           "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        return out
    return run
