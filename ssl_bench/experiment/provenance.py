"""Provenance of a run (``env.json``): versions, git commit, device, dates, dataset size; and
the identity of the code and libraries that compute a result (:func:`library_versions`,
:func:`code_digest`), which the cache key of a pretext stage holds."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import lightly
import numpy
import timm
import torch

from .. import __version__


#: the checkout ssl_bench runs from, when it is one
CHECKOUT = Path(__file__).resolve().parents[2]
#: the ssl_bench package
PACKAGE = Path(__file__).resolve().parents[1]
#: the packages of ssl_bench that orchestrate runs or read finished ones (layers 1 and 2 of
#: docs/architecture.md): no module below them imports them, so what they do reaches a
#: computation only through the config, which a cache key holds itself
ORCHESTRATION = ("cli", "testing", "bench", "report")


def library_versions() -> dict[str, str]:
    """The versions of the libraries that compute a result (as their modules report them)."""
    return {"torch": str(torch.__version__), "timm": str(timm.__version__),
            "lightly": str(lightly.__version__), "numpy": str(numpy.__version__)}


def source_digest(package: Path) -> str:
    """SHA-256 of the names and bytes of the ``.py`` files under ``package``, but those of
    :data:`ORCHESTRATION`."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] in ORCHESTRATION:
            continue
        h.update(relative.as_posix().encode("utf-8", "surrogateescape") + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def code_digest() -> str:
    """The identity of ssl_bench's computing code, :func:`source_digest` of the package, read
    once per process (a process keeps the code it loaded). ``__version__`` cannot stand for it:
    it stays "0.1.0" from commit to commit."""
    return source_digest(PACKAGE)


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
        **library_versions(),
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
