"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the toolkit writes for later reading (run directories, caches, benchmark output) goes
through :func:`atomic_write`: the content is written to a hidden temporary file beside the target
(same folder, so the final rename never crosses file systems) and renamed over it. On any error,
Ctrl-C included, the temporary file is removed and the target is untouched. The file gets the
permissions ``open()`` would give it (``0o666`` less the umask, or the folder's default ACL).
"""
from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import IO, Callable

#: a new file, never an existing one or a link's target, not inherited by child processes
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)


def _create_beside(path: Path) -> tuple[int, str]:
    """A new hidden file ``.<name>.<random>`` beside ``path``, open for writing. Created with
    mode ``0o666`` as ``open()`` does, so the umask decides its permissions: ``tempfile.mkstemp``
    makes ``0o600`` files whatever the umask, which the rename would leave on the target (a
    shared run directory or cache that others cannot read)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
        try:
            return os.open(tmp, _CREATE, 0o666), str(tmp)
        except FileExistsError:  # a leftover of the same name: draw another
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent / f".{path.name}.*"))


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a binary temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
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
