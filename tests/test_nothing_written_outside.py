"""A run writes only under ``--out``, the image cache and the log URI: not into the toolkit's
checkout (``git status`` for env.json's commit takes no ``.git/index.lock`` there), not into the
home folder or the caches of the libraries it uses. Checked by comparing every file's and folder's
modification time, size and mode before and after (a file created and removed again still changes
its folder's modification time)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_bench.experiment.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """``path -> (mtime in ns, size, mode)`` of ``root`` and everything under it, but pytest's
    own cache (any pytest process on the tree writes it when its session ends)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (folder == str(ROOT) and d == ".pytest_cache")]
        for name in [".", *dirs, *files]:
            path = os.path.normpath(os.path.join(folder, name))
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # removed since the folder was listed: absent from this snapshot
                continue
            out[path] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return out


def changes(before: dict, after: dict) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture
def checkout(tmp_path):
    """A git checkout with one committed file whose index entry is stale (same content, newer
    modification time): a plain ``git status`` refreshes the index and writes it back."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "checkout"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "module.py").write_text("x = 1\n")
    git(repo, "add", "module.py")
    git(repo, "commit", "-q", "-m", "one")
    stat = (repo / "module.py").stat()
    os.utime(repo / "module.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    return repo


def test_the_commit_is_read_without_writing_into_the_checkout(checkout):
    sha = git(checkout, "rev-parse", "HEAD").strip()
    before = snapshot(checkout / ".git")
    assert git_commit(checkout) == sha  # same content: not dirty
    assert changes(before, snapshot(checkout / ".git")) == []
    (checkout / "module.py").write_text("x = 2\n")
    assert git_commit(checkout) == f"{sha}-dirty"
    assert changes(before, snapshot(checkout / ".git")) == []
    # the premise: git's default status does write there (index.lock, then the index)
    git(checkout, "status", "--porcelain")
    assert str(checkout / ".git" / "index") in changes(before, snapshot(checkout / ".git"))


def test_a_smoke_run_writes_only_under_out_the_cache_and_the_log_uri(tmp_path):
    """``ssl-bench run`` in a fresh process whose home, XDG folders and the library caches lie in
    a temporary folder: afterwards the checkout (``.git`` included), that home and the working
    folder are as they were; the run directory, the cache and the event files are where asked."""
    home, work = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    work.mkdir()
    out, cache, logs = tmp_path / "out", tmp_path / "cache", tmp_path / "tb"
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "MPLCONFIGDIR": str(home / "matplotlib"), "TORCH_HOME": str(home / "torch"),
           "HF_HOME": str(home / "huggingface"), "TMPDIR": str(tmp_path / "tmp"),
           "PYTHONDONTWRITEBYTECODE": "1",  # Python's own bytecode cache is not the toolkit writing
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("SSL_BENCH_CACHE_DIR", None)
    (tmp_path / "tmp").mkdir()
    command = [sys.executable, "-m", "ssl_bench.cli", "run", "--pretext", "gsim", "--transfer", "finetune",
               "--profile", "smoke", "--folds", "2", "--quiet", "--out", str(out), "--set", f"data.cache_dir={cache}"]
    if importlib.util.find_spec("tensorboard") is not None:
        command += ["--log", "tensorboard", "--log-uri", str(logs)]
    watched = [ROOT, home, work]  # ROOT: the checkout the process imports ssl_bench from (PYTHONPATH)
    before = {root: snapshot(root) for root in watched}
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for root in watched:
        assert changes(before[root], snapshot(root)) == [], root
    assert (out / "gsim-finetune" / "summary.json").is_file() and any(cache.rglob("*.npy"))
    assert not logs.exists() or any(logs.rglob("events.out.tfevents.*"))
