"""On-disk cache of preprocessed images: decode each file once, in parallel, store the results in
memory-mappable shards, then read them in seconds from any number of processes.

Layout, under ``<cache_dir>/shards/<H>x<W>/``:

- ``<shard key>.npy``: float16 ``(n, H, W)``, up to :data:`SHARD_ROWS` images (fewer at large
  sizes, so that a shard stays under :data:`SHARD_BYTES`), read with ``np.load(mmap_mode="r")``;
- ``<shard key>.json``: the image keys of its rows, the rows that failed (with the reason) and
  ``sha256``, the checksum of the ``.npy`` file's bytes and of those keys and failures; written
  after the ``.npy``, so a shard counts as done only when both exist;
- ``index-<dataset key>.csv``: one row per image of a dataset (``row, image_id, key, shard,
  offset, height, width, problem``), written once every shard is done.

Nothing is read back unchecked. A shard is used only once its checksum matches (checked once per
process and file; hashing runs at several hundred MB/s, seconds for a dataset that trains for
hours), and the rows of an index only when each names the image its shard's keys hold at that
offset, with that shard's failure if any. A damaged shard (flipped bytes, truncated) or one
written without a checksum by an earlier version is dropped and built again, and a damaged index
is rebuilt from the shards, each with one warning line; ``ssl-bench data prepare`` so repairs a
cache, and a run never reads images other than the ones it asked for.

An image's key is a SHA-1 of the file's identity (:func:`file_identity`: absolute path, size,
modification and inode change times in ns, so that a file rewritten with its size and
modification time is decoded again) and the preprocessing parameters (image size, the
laterality the flip uses, :data:`PREPROCESS_VERSION`); a shard's key is a SHA-1 of its images'
keys, a dataset's of all of them. A changed file or parameter misses only the shard holding it;
its other images are copied from the shard that already holds them, not decoded again. Every
file is written atomically (``fileio.atomic_write``), so an interrupted ``ssl-bench data
prepare`` leaves whole shards and resumes at the first missing one, and concurrent runs at worst
build a shard twice. Stale shards are never read again; delete
the folder to reclaim the space.

The per-image cache of earlier versions (``<cache_dir>/images/<aa>/<key>.npy``) is migrated: its
entries are copied into shards instead of being decoded again, with one line saying so. Its keys
of files lack the change time, so a file's entry is no longer found: the file is decoded again,
once, as it is for the shards built before the change time was keyed.

Misses are decoded by a :class:`concurrent.futures.ProcessPoolExecutor` (``fork`` while the
caller has a single thread, else ``spawn``; if the pool breaks, the rest is decoded in-process)
with a transient rich progress bar on stderr; ``workers=1`` or a single miss decodes in-process.
A file that fails becomes a :class:`~ssl_bench.data.base.Problem` (its row reads as zeros),
never an exception.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from ..console import make_console, progress_bar
from ..errors import DataError, ToolkitWarning, exception_text
from ..fileio import OutOfSpace, atomic_write, atomic_write_text, file_sha256
from .problem import Problem
from .preprocess import PREPROCESS_VERSION, preprocess_file

#: most images per shard (the ``ssl-bench data prepare`` resume step)
SHARD_ROWS = 2048
#: largest shard, so that building one stays within a fixed amount of memory at any image size
SHARD_BYTES = 256 * 2**20
#: version of the shard layout (part of every dataset key); 2: shards carry a checksum
FORMAT_VERSION = 2

#: what produces the images of a list of rows: yields ``(row, array or None, reason)``
Producer = Callable[[list[int]], Iterable[tuple[int, "np.ndarray | None", str]]]


def file_identity(path: str | Path) -> str:
    """What tells a file's content apart without reading it: its absolute path, size, and
    modification and inode change times in ns (raises ``OSError`` if absent). The change time
    (``st_ctime_ns``) is set by the kernel to the present on every write, replacement or
    metadata change and cannot be set back, so a file rewritten with the same size and a restored
    modification time (``cp -p``, ``rsync -t``, ``tar``, ``os.utime``) gets another identity. A
    ``chmod`` changes it too: at worst a file decoded again."""
    absolute = os.path.abspath(os.fspath(path))
    st = os.stat(absolute)
    return f"{absolute}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def cache_key(path: str | Path, image_size: tuple[int, int], laterality: str = "") -> str:
    """Key of one image: file identity + preprocessing parameters (raises ``OSError`` if absent)."""
    ident = "|".join(
        [
            file_identity(path),
            f"{int(image_size[0])}x{int(image_size[1])}",
            (laterality or "").upper(),
            f"v{PREPROCESS_VERSION}",
        ]
    )
    return hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()


def cache_file(cache_dir: str | Path, key: str) -> Path:
    """Where the per-image cache of earlier versions kept an image (read only to migrate it)."""
    return Path(cache_dir).expanduser() / "images" / key[:2] / f"{key}.npy"


def shard_folder(cache_dir: str | Path, image_size: tuple[int, int]) -> Path:
    return Path(cache_dir).expanduser() / "shards" / f"{int(image_size[0])}x{int(image_size[1])}"


def shard_rows(image_size: tuple[int, int]) -> int:
    """Images per shard at this size: :data:`SHARD_ROWS`, fewer where that would pass :data:`SHARD_BYTES`."""
    per_image = 2 * int(image_size[0]) * int(image_size[1])
    return max(1, min(SHARD_ROWS, SHARD_BYTES // per_image))


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


class ShardedImages:
    """A dataset's images, float16 ``(N, H, W)``, read on demand from memory-mapped shards.

    Indexing reads like a numpy array (``images[i]``, ``images[mask]``, ``np.asarray(images)``
    return arrays); :meth:`subset` keeps rows without reading them. Each read maps the shards it
    needs and unmaps them afterwards: pages read stay in the OS page cache, shared by every
    process (DataLoader workers), but do not pile up in a process's resident memory, which so
    stays bounded however large the dataset."""

    def __init__(self, shards: list[Path], shard: np.ndarray, offset: np.ndarray, image_size: tuple[int, int]):
        self.shards = [Path(p) for p in shards]
        self.shard = np.asarray(shard, dtype=np.int64)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.shard), *self.image_size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float16)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 2

    def __len__(self) -> int:
        return len(self.shard)

    def take(self, rows) -> np.ndarray:
        """The images of ``rows`` (integer positions) as one in-memory array, in that order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.image_size), dtype=np.float16)
        shard, offset = self.shard[rows], self.offset[rows]
        for s in np.unique(shard):
            picked = np.flatnonzero(shard == s)
            mapped = np.load(self.shards[int(s)], mmap_mode="r", allow_pickle=False)
            out[picked] = mapped[offset[picked]]
            del mapped  # unmapped here, not when the next read happens to replace it
        return out

    def subset(self, rows) -> "ShardedImages":
        """The images of ``rows`` (positions or a boolean mask), without reading them."""
        rows = np.arange(len(self))[rows]
        return ShardedImages(self.shards, self.shard[rows], self.offset[rows], self.image_size)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.take([np.arange(len(self))[index]])[0]
        return self.take(np.arange(len(self))[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self), SHARD_ROWS):
            yield from self.take(np.arange(start, min(start + SHARD_ROWS, len(self))))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.take(np.arange(len(self)))
        return array if dtype is None else array.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self).astype(dtype)


def sharded_images(
    folder: Path,
    keys: list[str],
    image_ids: list[str],
    image_size: tuple[int, int],
    produce: Producer,
    legacy_dir: Path | None = None,
) -> tuple[ShardedImages, dict[int, str]]:
    """The images with these keys, from ``folder``'s shards, building the missing shards first.

    ``produce(rows)`` makes the images no shard (nor the per-image cache under ``legacy_dir``)
    holds. Returns the images and ``{row: reason}`` for the rows that could not be made."""
    size = (int(image_size[0]), int(image_size[1]))
    per_shard = shard_rows(size)
    index_path = folder / f"index-{_digest([f'v{FORMAT_VERSION}', str(per_shard), *keys])}.csv"
    indexed = _read_index(index_path, folder, size, keys)
    if indexed is not None:
        return indexed
    known = _KnownImages(folder, size)
    migrated, unchecked = 0, 0
    names, shard_of, offsets, problems = [], np.zeros(len(keys), np.int64), np.zeros(len(keys), np.int64), {}
    n_shards = -(-len(keys) // per_shard)
    for number, start in enumerate(range(0, len(keys), per_shard)):
        rows = list(range(start, min(start + per_shard, len(keys))))
        name = _digest([keys[i] for i in rows])
        meta, why = verified_shard(folder, name, size)
        failed = None
        if meta is not None and meta["keys"] == [keys[i] for i in rows]:
            failed = meta["failed"]
        elif why == UNCHECKED:
            unchecked += 1
        elif why or meta is not None:
            _warn(f"cache: shard {folder / name}.npy {why or 'holds other images than its name says'}: "
                  f"dropped, its images are made again")
        if failed is None:
            try:
                failed, moved = _build_shard(folder, name, rows, keys, size, produce, known, legacy_dir)
            except OutOfSpace as exc:  # the shards before it are whole: the next call resumes here
                raise exc.keeping(f"{number} of {n_shards} shards of the image cache in {folder} are complete and "
                                  f"kept (the cache resumes after them)" if number else
                                  f"no shard of the image cache in {folder} was complete yet") from None
            migrated += moved
        for i in rows:
            shard_of[i], offsets[i] = number, i - start
            if str(i - start) in failed:
                problems[i] = failed[str(i - start)]
        names.append(name)
    if unchecked:
        _warn(f"cache: {unchecked} shard(s) in {folder} were written without a checksum by an earlier version "
              f"of ssl-bench: their images are made again, once")
    if migrated:
        make_console(stderr=True).print(
            f"cache: moved {migrated} image(s) from the per-image cache ({legacy_dir}) into shards; "
            "that folder is no longer read and can be deleted", soft_wrap=True, highlight=False, markup=False)
    index = pd.DataFrame({
        "row": np.arange(len(keys)), "image_id": image_ids, "key": keys, "shard": [names[s] for s in shard_of],
        "offset": offsets, "height": size[0], "width": size[1],
        "problem": [problems.get(i, "") for i in range(len(keys))],
    })
    try:
        atomic_write_text(index_path, index.to_csv(index=False))
    except OutOfSpace as exc:
        raise exc.keeping(f"all {n_shards} shards of the image cache in {folder} are complete and kept") from None
    images = ShardedImages([folder / f"{n}.npy" for n in names], shard_of, offsets, size)
    return images, problems


#: why :func:`verified_shard` refuses a shard of the layout before checksums
UNCHECKED = "was written without a checksum"
#: shards whose checksum matched in this process: (file identities) -> their metadata
_VERIFIED: dict[tuple[str, str], dict] = {}


def shard_checksum(data: Path, keys: list[str], failed: dict[str, str]) -> str:
    """SHA-256 of a shard: its ``.npy`` file's bytes, then its keys and failures as canonical JSON."""
    listed = json.dumps({"keys": keys, "failed": failed}, sort_keys=True).encode("utf-8", "surrogateescape")
    return hashlib.sha256(bytes.fromhex(file_sha256(data)) + listed).hexdigest()


def verified_shard(folder: Path, name: str, size: tuple[int, int]) -> tuple[dict | None, str]:
    """``(metadata, "")`` of a whole shard whose checksum matches (``keys``, ``failed``), else
    ``(None, why)``: ``why`` is ``""`` when the shard is absent (not written yet), :data:`UNCHECKED`
    for one of the layout before checksums, else what is wrong with it."""
    meta_path, data = folder / f"{name}.json", folder / f"{name}.npy"
    if not (meta_path.is_file() and data.is_file()):
        return None, ""
    try:
        identity = (file_identity(meta_path), file_identity(data))
        if identity in _VERIFIED:
            return _VERIFIED[identity], ""
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        keys, failed = meta["keys"], meta["failed"]
        if "sha256" not in meta:
            return None, UNCHECKED
        array = np.load(data, mmap_mode="r", allow_pickle=False)
        shape, dtype = array.shape, array.dtype
        del array
        checksum = shard_checksum(data, keys, failed)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # truncated, not JSON, not an array
        return None, f"cannot be read ({exception_text(exc)})"
    if shape != (len(keys), *size) or dtype != np.float16:
        return None, f"holds a {dtype} array of shape {shape} where {len(keys)} images of {size[0]}x{size[1]} belong"
    if checksum != meta["sha256"]:
        return None, "is damaged (its checksum does not match its content)"
    _VERIFIED[identity] = {"keys": list(keys), "failed": dict(failed)}
    return _VERIFIED[identity], ""


def _read_index(path: Path, folder: Path, size: tuple[int, int], keys: list[str]) -> tuple[ShardedImages, dict[int, str]] | None:
    """A complete dataset's images from its index, or ``None`` (absent, a shard gone or
    damaged: built again by the caller; an index that does not match its shards is dropped with
    one warning line and rebuilt)."""
    if not path.is_file():
        return None
    try:
        index = pd.read_csv(path, dtype={"image_id": str, "key": str, "shard": str, "problem": str},
                            keep_default_na=False)
        names = list(dict.fromkeys(index["shard"]))
        metas = [verified_shard(folder, n, size)[0] for n in names]
        found = [m for m in metas if m is not None]
        if len(found) < len(metas):
            return None  # the build reports the shard, makes its images again and rewrites the index
        problem = _index_problem(index, keys, dict(zip(names, found)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = f"cannot be read ({exception_text(exc)})"
    if problem:
        _warn(f"cache: index {path} {problem}: dropped, rebuilt from the shards")
        return None
    number = {n: k for k, n in enumerate(names)}
    shard_of = index["shard"].map(number).to_numpy()
    problems = {int(r): p for r, p in zip(index["row"], index["problem"]) if p}
    return ShardedImages([folder / f"{n}.npy" for n in names], shard_of, index["offset"].to_numpy(), size), problems


def _index_problem(index: pd.DataFrame, keys: list[str], metas: dict[str, dict]) -> str:
    """What makes an index other than its shards say (``""`` when it matches them row by row)."""
    if index["row"].tolist() != list(range(len(keys))) or index["key"].tolist() != keys:
        return "does not list this dataset's images in order"
    for row, (key, name, offset, problem) in enumerate(zip(index["key"], index["shard"], index["offset"],
                                                           index["problem"])):
        meta = metas[name]
        if not (isinstance(offset, (int, np.integer)) and 0 <= offset < len(meta["keys"])):
            return f"gives row {row} an offset ({offset}) outside its shard"
        if meta["keys"][offset] != key or meta["failed"].get(str(offset), "") != problem:
            return f"points row {row} to another image than its key's"
    return ""


def _warn(line: str) -> None:
    warnings.warn(line, ToolkitWarning, stacklevel=3)


class _KnownImages:
    """Where the finished shards of a folder hold each image key (read once, on the first miss);
    an image is copied only from a shard whose checksum matches."""

    def __init__(self, folder: Path, size: tuple[int, int]):
        self.folder, self.size = folder, size
        self.where: dict[str, tuple[str, int]] | None = None

    def find(self, key: str) -> np.ndarray | None:
        if self.where is None:
            self.where = {}
            for meta_file in sorted(self.folder.glob("*.json")):
                try:
                    record = json.loads(meta_file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("failed", {}), dict):
                    continue
                for offset, k in enumerate(record.get("keys", [])):
                    if str(offset) not in record.get("failed", {}):
                        self.where[k] = (meta_file.stem, offset)
        if key not in self.where:
            return None
        name, offset = self.where[key]
        meta, _ = verified_shard(self.folder, name, self.size)
        if meta is None or offset >= len(meta["keys"]) or meta["keys"][offset] != key:
            return None
        try:
            return np.array(np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)[offset])
        except (OSError, ValueError, IndexError):
            return None


class _Writes:
    """A file seen by numpy only through its ``write``: ``np.save`` writes a real file with C's
    ``fwrite``, which reports a full disk as a short write without an errno ("N requested and M
    written"); through ``write`` it is the ``OSError(ENOSPC)`` that :func:`atomic_write` names."""

    def __init__(self, fh):
        self.write = fh.write


def _build_shard(folder, name, rows, keys, size, produce, known, legacy_dir) -> tuple[dict[str, str], int]:
    """Fill one shard from other shards, the per-image cache, then ``produce``; write it."""
    shard = np.zeros((len(rows), *size), dtype=np.float16)
    failed: dict[str, str] = {}
    missing, migrated = [], 0
    for offset, i in enumerate(rows):
        found = known.find(keys[i])
        if found is None and legacy_dir is not None:
            found = _legacy_entry(legacy_dir, keys[i], size)
            migrated += found is not None
        if found is not None and found.shape == size:
            shard[offset] = found
        else:
            missing.append(i)
    if missing:
        for i, array, reason in produce(missing):
            if array is None:
                failed[str(i - rows[0])] = reason
            else:
                shard[i - rows[0]] = array
    data = folder / f"{name}.npy"
    atomic_write(data, lambda fh: np.save(_Writes(fh), shard, allow_pickle=False))
    listed = [keys[i] for i in rows]
    atomic_write_text(folder / f"{name}.json", json.dumps({"keys": listed, "failed": failed,
                                                            "sha256": shard_checksum(data, listed, failed)}))
    return failed, migrated


def _legacy_entry(cache_dir: Path, key: str, size: tuple[int, int]) -> np.ndarray | None:
    target = cache_file(cache_dir, key)
    if not target.is_file():
        return None
    try:
        array = np.load(target, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array if array.shape == size and array.dtype == np.float16 else None


def decode_one(path: str, laterality: str, image_size: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """Worker: preprocess one file; ``(array, "")`` or ``(None, reason)``."""
    try:
        return preprocess_file(path, image_size, laterality or None).astype(np.float16), ""
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
) -> tuple[ShardedImages, list[Problem]]:
    """Preprocessed images of ``table['path']`` (flip from ``table['laterality']``) via the cache.

    Returns:
        images: float16 ``(N, H, W)`` (:class:`ShardedImages`), row ``i`` for table row ``i``
        (zeros where it failed).
        problems: one :class:`Problem` per file that could not be used (``file`` = its path as
        in the table).
    """
    size = (int(image_size[0]), int(image_size[1]))
    n = len(table)
    paths = [str(p) for p in table["path"]]
    if "laterality" in table.columns:
        lateralities = ["" if pd.isna(v) else str(v) for v in table["laterality"]]
    else:
        lateralities = [""] * n
    unreadable: dict[int, str] = {}
    keys = []
    for i, (path, lat) in enumerate(zip(paths, lateralities)):
        try:
            keys.append(cache_key(path, size, lat))
        except OSError as exc:
            # not a key of a file, so that the row is retried once the file is there
            unreadable[i] = "file not found" if isinstance(exc, FileNotFoundError) else \
                f"cannot read file: {exc.strerror or exc}"
            keys.append(_digest(["unreadable", os.path.abspath(path), unreadable[i], str(size)]))

    def produce(rows: list[int]):
        for i in rows:
            if i in unreadable:
                yield i, None, unreadable[i]
        decodable = [i for i in rows if i not in unreadable]
        for i, (array, reason) in _decode_all(decodable, paths, lateralities, size, workers):
            yield i, array, reason

    ids = [str(v) for v in table["image_id"]] if "image_id" in table.columns else paths
    images, failed = sharded_images(shard_folder(cache_dir, size), keys, ids, size, produce,
                                    legacy_dir=Path(cache_dir).expanduser())
    failed = {**failed, **unreadable}  # an unreadable file is rechecked on every load
    return images, [Problem(paths[i], failed[i]) for i in sorted(failed)]


def _decode_all(misses: list[int], paths, lateralities, size, workers):
    """Yield ``(row, (array | None, reason))`` for every miss, in parallel when worthwhile."""
    if not misses:
        return
    n_workers = int(workers) if workers and int(workers) > 0 else _cpu_count()
    n_workers = min(n_workers, len(misses))
    progress = progress_bar("decoding images", transient=True, info=False)
    if n_workers <= 1:
        with progress:
            task = progress.add_task("decode", total=len(misses))
            for i in misses:
                yield i, decode_one(paths[i], lateralities[i], size)
                progress.advance(task)
        return
    done: set[int] = set()
    try:
        # Submit (and so fork every worker) before the progress bar starts its refresh thread.
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context()) as pool:
            futures = {pool.submit(decode_one, paths[i], lateralities[i], size): i for i in misses}
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
    rest = [i for i in misses if i not in done]
    if rest:
        with progress:
            task = progress.add_task("decode", total=len(rest))
            for i in rest:
                yield i, decode_one(paths[i], lateralities[i], size)
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
