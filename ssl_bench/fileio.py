"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the toolkit writes for later reading (run directories, caches, benchmark output) goes
through :func:`atomic_write`: the content is written to a hidden temporary file beside the target
(same folder, so the final rename never crosses file systems) and renamed over it. On any error,
Ctrl-C included, the temporary file is removed and the target is untouched. The file gets the
permissions ``open()`` would give it (``0o666`` less the umask, or the folder's default ACL).

A full device or disk quota (``ENOSPC``, ``EDQUOT``, also when torch or numpy wrap it) is
:class:`OutOfSpace`: one line naming the file, which each layer it passes through completes with
what it kept (:meth:`OutOfSpace.keeping`) and the CLI prints without a traceback, exit 1.
"""
from __future__ import annotations

import errno
import hashlib
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


class OutOfSpace(Exception):
    """The device, or the user's disk quota, filled up while the toolkit wrote ``path``: the
    environment, neither the command nor a bug, so the CLI prints this one line and exits 1 (not
    2, the exit of a mistake in the command: the same command, rerun once there is space, finishes
    the work). No half-written file is left where it would be read as a result (:func:`atomic_write`
    removes its temporary file; a fold's folder goes whole). ``kept`` lists what the layers the
    error passed through keep (complete folds, cache shards, a previous checkpoint), ``rerun`` what
    to do once there is space."""

    def __init__(self, path: str | Path, quota: bool = False, kept: tuple[str, ...] = (),
                 rerun: str = "rerun the same command"):
        self.path, self.quota, self.kept, self.rerun = str(path), bool(quota), tuple(kept), rerun
        super().__init__(str(self))

    def __str__(self) -> str:
        what = "disk quota exceeded" if self.quota else "no space left on device"
        kept = f": {'; '.join(self.kept)}" if self.kept else ""
        return f"{what} writing {self.path}{kept}; free space and {self.rerun}"

    def __reduce__(self):  # crosses process boundaries (bench jobs) whole
        return OutOfSpace, (self.path, self.quota, self.kept, self.rerun)

    def keeping(self, *kept: str, rerun: str | None = None) -> "OutOfSpace":
        """The same error, saying also what ``kept`` says is kept (and ``rerun`` instead)."""
        return OutOfSpace(self.path, self.quota, self.kept + tuple(k for k in kept if k), rerun or self.rerun)


def _space_errno(exc: BaseException | None) -> int | None:
    """``ENOSPC`` or ``EDQUOT`` when ``exc`` (or what it wraps: torch reports a full disk as a
    RuntimeError of its zip writer) is the device running out of space, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutOfSpace):
            return errno.EDQUOT if exc.quota else errno.ENOSPC
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc.errno
        if "Disk quota exceeded" in str(exc):
            return errno.EDQUOT
        if "No space left on device" in str(exc) or "file write failed" in str(exc):
            return errno.ENOSPC
        exc = exc.__cause__ or exc.__context__
    return None


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) is the device or the disk quota running out of space."""
    return _space_errno(exc) is not None


def out_of_space_error(exc: BaseException, path: str | Path, kept: tuple[str, ...] = ()) -> OutOfSpace | None:
    """``exc`` as an :class:`OutOfSpace` naming ``path`` (the file being written) when it is the
    device or the disk quota running out of space (``exc`` itself when it already is one), else None."""
    if isinstance(exc, OutOfSpace):
        return exc.keeping(*kept)
    code = _space_errno(exc)
    return None if code is None else OutOfSpace(path, quota=code == errno.EDQUOT, kept=kept)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(fh)`` on a binary temporary file beside ``path``, then rename it over ``path``.
    A full device or quota is :class:`OutOfSpace` naming ``path``, with nothing of it left."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_beside(path)
    except OSError as exc:  # no room even for a folder or an empty file (inodes)
        full = out_of_space_error(exc, path)
        if full is not None:
            raise full from exc
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        full = out_of_space_error(exc, path) if isinstance(exc, Exception) else None  # Ctrl-C stays itself
        if full is not None:
            raise full from exc
        raise


def cannot_write(path: str | Path, exc: OSError) -> str:
    """Why ``path`` could not be written (``exc``), in words for an error line: a folder on its way
    that is a file, else the system's reason (``Read-only file system``, ``Permission denied``)."""
    try:
        for ancestor in Path(path).parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    return f"{ancestor} is a file, not a folder"
                break
    except OSError:
        pass
    return exc.strerror or str(exc)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))



def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks (a file larger than memory is fine)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
