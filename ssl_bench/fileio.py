"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the toolkit writes for later reading (run directories, caches, benchmark output) goes
through :func:`atomic_write`: the content is written to a hidden temporary file beside the target
(same folder, so the final rename never crosses file systems) and renamed over it. On any error,
Ctrl-C included, the temporary file is removed and the target is untouched.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a binary temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps: torch reports a full disk as a RuntimeError of its zip
    writer) is the device running out of space, so that writers can say so in one line instead of
    a traceback that hides the cause."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "file write failed" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
