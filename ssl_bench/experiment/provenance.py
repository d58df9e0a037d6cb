"""Provenance of a run (``env.json``): versions, git commit, device, dates, dataset size."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import timm
import torch

from .. import __version__


#: the checkout ssl_bench runs from, when it is one
CHECKOUT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = CHECKOUT) -> str | None:
    """The commit of the ssl_bench checkout ``root``, if it is one (with ``-dirty`` when modified).

    Git runs without its optional locks (``GIT_OPTIONAL_LOCKS=0``, git >= 2.15; older versions
    ignore it): a plain ``git status`` refreshes the index and writes it back under
    ``.git/index.lock``, a write into the toolkit's checkout on every run, which fails a ``git
    commit`` running there at the same moment, and is no business of a run, which writes only
    under ``--out``, the image cache and the log URI."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, env=env
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, env=env,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def environment(device_name: str) -> dict:
    return {
        "ssl_bench": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": device_name,
    }


def dataset_info(loaded) -> dict:
    labels = loaded.labels
    return {
        "name": loaded.name,
        "n_images": int(len(labels)),
        "n_benign": int((labels == 0).sum()),
        "n_malignant": int((labels == 1).sum()),
        "n_patients": int(len(set(loaded.groups))),
        "n_skipped": len(loaded.skipped),
    }
