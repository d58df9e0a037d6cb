"""On-disk cache of preprocessed images: decode each file once, in parallel, then load in seconds.

One small ``.npy`` (float16, ``(H, W)``) per image under ``<cache_dir>/images/<aa>/<key>.npy``.
The key is a SHA-1 of the file's identity (absolute path, size, mtime in ns), the preprocessing
parameters (image size, the laterality the flip uses, :data:`PREPROCESS_VERSION`): a changed
file or parameter misses only the entries it affects, everything else still hits. Entries are
written atomically (temporary file in the same folder + ``os.replace``), so an interrupted run
never leaves a half-written entry, and concurrent runs at worst decode an image twice. Stale
entries are never read again; delete the folder to reclaim the space.

Misses are decoded by a :class:`concurrent.futures.ProcessPoolExecutor` (``fork`` while the
caller has a single thread, else ``spawn``; if the pool breaks, the rest is decoded in-process)
with a transient rich progress bar on stderr; ``workers=1`` or a single miss decodes in-process. A file that fails becomes a
:class:`~ssl_bench.data.base.Problem` (its row of the returned array stays zero), never an
exception.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd

from ..console import progress_bar
from ..errors import DataError
from ..fileio import atomic_write
from .problem import Problem
from .preprocess import PREPROCESS_VERSION, preprocess_file


def cache_key(path: str | Path, image_size: tuple[int, int], laterality: str = "") -> str:
    """Key of one image: file identity + preprocessing parameters (raises ``OSError`` if absent)."""
    absolute = os.path.abspath(os.fspath(path))
    st = os.stat(absolute)
    ident = "|".join(
        [
            absolute,
            str(st.st_size),
            str(st.st_mtime_ns),
            f"{int(image_size[0])}x{int(image_size[1])}",
            (laterality or "").upper(),
            f"v{PREPROCESS_VERSION}",
        ]
    )
    return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()


def cache_file(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / "images" / key[:2] / f"{key}.npy"


def _atomic_save(target: Path, array: np.ndarray) -> None:
    atomic_write(target, lambda fh: np.save(fh, array, allow_pickle=False))


def _load_entry(target: Path, image_size: tuple[int, int]) -> np.ndarray | None:
    try:
        array = np.load(target, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.shape != tuple(image_size) or array.dtype != np.float16:
        return None
    return array


def decode_one(path: str, laterality: str, image_size: tuple[int, int], target: str) -> tuple[np.ndarray | None, str]:
    """Worker: preprocess one file and store it in the cache; ``(array, "")`` or ``(None, reason)``."""
    try:
        image = preprocess_file(path, image_size, laterality or None).astype(np.float16)
        _atomic_save(Path(target), image)
        return image, ""
    except DataError as exc:
        return None, _reason(str(exc), path)
    except MemoryError:
        return None, "out of memory while decoding"
    except Exception as exc:  # any decoder failure is one bad image, not a crashed run
        return None, f"cannot preprocess: {type(exc).__name__}: {exc}"


def _reason(message: str, path: str) -> str:
    """Strip the leading ``<path>: `` from a DataError: the Problem already names the file."""
    for prefix in (f"{path}: ", f"{os.path.abspath(path)}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def load_cached_images(
    table: pd.DataFrame,
    image_size: tuple[int, int],
    cache_dir: str | Path,
    workers: int = 0,
) -> tuple[np.ndarray, list[Problem]]:
    """Preprocessed images of ``table['path']`` (flip from ``table['laterality']``) via the cache.

    Returns:
        images: float16 ``(N, H, W)``, row ``i`` for table row ``i`` (zeros where it failed).
        problems: one :class:`Problem` per file that could not be used (``file`` = its path as
        in the table).
    """
    size = (int(image_size[0]), int(image_size[1]))
    n = len(table)
    images = np.zeros((n, *size), dtype=np.float16)
    problems: list[Problem] = []
    paths = [str(p) for p in table["path"]]
    if "laterality" in table.columns:
        lateralities = ["" if pd.isna(v) else str(v) for v in table["laterality"]]
    else:
        lateralities = [""] * n

    misses: list[tuple[int, str]] = []
    failed: dict[int, str] = {}
    for i, (path, lat) in enumerate(zip(paths, lateralities)):
        try:
            key = cache_key(path, size, lat)
        except FileNotFoundError:
            failed[i] = "file not found"
            continue
        except OSError as exc:
            failed[i] = f"cannot read file: {exc.strerror or exc}"
            continue
        target = cache_file(cache_dir, key)
        cached = _load_entry(target, size) if target.is_file() else None
        if cached is not None:
            images[i] = cached
        else:
            misses.append((i, str(target)))

    if misses:
        for i, (array, reason) in _decode_all(misses, paths, lateralities, size, workers):
            if array is None:
                failed[i] = reason
            else:
                images[i] = array
    for i in sorted(failed):
        problems.append(Problem(paths[i], failed[i]))
    return images, problems


def _decode_all(misses, paths, lateralities, size, workers):
    """Yield ``(row, (array | None, reason))`` for every miss, in parallel when worthwhile."""
    n_workers = int(workers) if workers and int(workers) > 0 else _cpu_count()
    n_workers = min(n_workers, len(misses))
    progress = progress_bar("decoding images", transient=True, info=False)
    if n_workers <= 1:
        with progress:
            task = progress.add_task("decode", total=len(misses))
            for i, target in misses:
                yield i, decode_one(paths[i], lateralities[i], size, target)
                progress.advance(task)
        return
    done: set[int] = set()
    try:
        # Submit (and so fork every worker) before the progress bar starts its refresh thread.
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context()) as pool:
            futures = {
                pool.submit(decode_one, paths[i], lateralities[i], size, target): i for i, target in misses
            }
            try:
                with progress:
                    task = progress.add_task("decode", total=len(misses))
                    for future in as_completed(futures):
                        result = future.result()
                        i = futures[future]
                        done.add(i)
                        yield i, result
                        progress.advance(task)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    except BrokenProcessPool:
        # A worker died (killed, or the start method cannot re-import __main__): finish the
        # remaining images in this process rather than calling them all bad.
        pass
    rest = [(i, target) for i, target in misses if i not in done]
    if rest:
        with progress:
            task = progress.add_task("decode", total=len(rest))
            for i, target in rest:
                yield i, decode_one(paths[i], lateralities[i], size, target)
                progress.advance(task)


def _cpu_count() -> int:
    """CPUs this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _mp_context():
    """``fork`` while this process has a single thread (fast, no re-import), else ``spawn``."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
