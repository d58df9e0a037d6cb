"""The data section of ``benchmarks/speed.py``: an epoch's input cost through ssl_bench's cache
against a naive ``torch.utils.data.DataLoader`` that decodes every DICOM every epoch.

The files: one mammogram-like 14-bit image (4400x2800 by default, the size of a real full-field
mammogram) written as an RLE Lossless DICOM (as INbreast/VinDr ship them) with ssl_bench's own
writer, copied N times (distinct files to the cache). Naive: ``DataLoader`` over a dataset whose
``__getitem__`` runs the full decode + crop + flip + resize (``preprocess_file``) with W worker
processes, timed over one epoch of the N files and scaled to a fold's training images. ssl_bench:
``load_cached_images`` (cold: decodes in parallel and writes the cache; warm: reads it), done
once per process and amortised over a run's epochs, plus the per-epoch cost of drawing and
augmenting batches from the dataset held on the device (``FitContext.batches``).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DATASET_IMAGES = 387
FOLDS = 5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NaiveDicomDataset(torch.utils.data.Dataset):
    """What a naive pipeline does every epoch: decode + preprocess each DICOM from disk."""

    def __init__(self, paths, size):
        self.paths, self.size = list(paths), tuple(size)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from ssl_bench.data.preprocess import preprocess_file

        img = preprocess_file(self.paths[i], self.size, "L")
        return torch.from_numpy(img).unsqueeze(0), float(i % 3 == 0)


def write_dicom_files(folder: Path, n: int, shape, compress: str | None) -> list[Path]:
    """One mammogram-like 14-bit image, RLE-compressed as in real releases, copied ``n`` times."""
    from ssl_bench.data.release_writer import write_dicom

    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    inside = (xx / (0.75 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2 < 1
    tissue = 5000 + 4000 * np.exp(-xx / (0.4 * w)) + rng.normal(0, 60, (h, w)).astype(np.float32)
    pixels = np.where(inside, tissue, 40.0).clip(0, 2**14 - 1).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "img000.dcm"
    write_dicom(first, pixels, laterality="L", view="CC", patient="p0", compress=compress)
    paths = [first]
    for i in range(1, n):
        paths.append(folder / f"img{i:03d}.dcm")
        shutil.copyfile(first, paths[-1])  # distinct files: the cache keys them apart
    return paths


def measure_data(args, device, results, save, cfg, log) -> None:
    """Fill ``results["data"]``; ``cfg``: the config whose batches (size, augmentation) are drawn."""
    import pandas as pd

    from ssl_bench.data.cache import load_cached_images
    from ssl_bench.training.context import FitContext

    d = results["data"]
    tmp = Path(tempfile.mkdtemp(prefix="ssl_bench_speed_"))
    try:
        shape = args.dicom_shape
        t = time.perf_counter()
        compress = "rle"
        try:
            paths = write_dicom_files(tmp / "dcm", args.data_files, shape, compress)
        except Exception as exc:  # noqa: BLE001 - no RLE encoder: uncompressed still works
            compress, d["rle_error"] = None, str(exc)[:200]
            paths = write_dicom_files(tmp / "dcm", args.data_files, shape, None)
        d.update(files=len(paths), dicom_shape=list(shape), compression=compress or "none",
                 file_mb=round(paths[0].stat().st_size / 1e6, 2), write_s=time.perf_counter() - t)
        n, n_train = len(paths), DATASET_IMAGES * (FOLDS - 1) / FOLDS

        # naive: DataLoader decoding + preprocessing every file, every epoch
        workers = args.loader_workers
        loader = torch.utils.data.DataLoader(
            NaiveDicomDataset(paths, args.size), batch_size=args.batch[0], shuffle=True,
            num_workers=workers, persistent_workers=False,
        )
        t = time.perf_counter()
        for x, _ in loader:
            x.to(device)
        sync(device)
        naive = time.perf_counter() - t
        d.update(naive_loader_workers=workers, naive_measured_s=naive,
                 naive_epoch_s=naive * n_train / n, naive_s_per_img=naive / n)
        log(f"  naive DataLoader ({workers} workers): {naive / n * 1e3:.0f} ms/img")
        save()

        # ssl_bench: the cache (decoded once, in parallel), then the dataset on the device
        table = pd.DataFrame({"path": [str(p) for p in paths], "laterality": ["L"] * n})
        cache_dir = tmp / "cache"
        t = time.perf_counter()
        _, problems = load_cached_images(table, args.size, cache_dir, workers=args.cache_workers)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        images, problems2 = load_cached_images(table, args.size, cache_dir, workers=args.cache_workers)
        images = np.asarray(images)  # read every image: the cache's index alone is read lazily
        warm = time.perf_counter() - t
        if problems or problems2:
            d["cache_problems"] = [str(p) for p in (problems or problems2)][:3]
        dataset_load = warm * DATASET_IMAGES / n  # once per process: then it lives on the device
        t = time.perf_counter()
        on_device = torch.from_numpy(images).unsqueeze(1).to(device)
        sync(device)
        upload = (time.perf_counter() - t) * DATASET_IMAGES / n

        # per epoch: gather + augment on the device, over a fold's training images
        m = int(round(n_train))
        idx = torch.arange(m, device=device) % n
        ctx = FitContext(config=cfg, pretext=None, images=on_device.index_select(0, idx),
                         labels=torch.zeros(m, device=device), device=device)
        for _ in ctx.batches():  # warm-up
            pass
        sync(device)
        t = time.perf_counter()
        for _ in ctx.batches():
            pass
        sync(device)
        batches = time.perf_counter() - t
        amortise = results["paper"]["epochs"]
        epoch_s = batches + (dataset_load + upload) / amortise
        d.update(cache_cold_s_per_img=cold / n, cache_warm_s_per_img=warm / n,
                 cache_dataset_load_s=dataset_load, upload_s=upload, device_batches_epoch_s=batches,
                 amortised_over_epochs=amortise, ssl_bench_epoch_s=epoch_s,
                 naive_over_ssl_bench=d["naive_epoch_s"] / epoch_s)
        log(f"  cache: cold {cold / n * 1e3:.0f} ms/img, warm {warm / n * 1e3:.2f} ms/img; "
            f"device batches {batches * 1e3:.1f} ms/epoch")
        save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def data_share(results) -> None:
    """Data loading's share of an epoch: ssl_bench's data cost next to its TSBN-U epoch."""
    d = results["data"]
    row = results["steps"].get(f"tsbn_u_b{results['args']['batch'][0]}", {})
    n_train = DATASET_IMAGES * (FOLDS - 1) / FOLDS
    for variant, suffix in (("ssl_bench", ""), ("ssl_bench_graphs", "_graphs")):
        step = row.get(variant, {}).get("step_s")
        if not step or "ssl_bench_epoch_s" not in d:
            continue
        train = step * n_train / row["batch"]
        d[f"train_epoch_s{suffix}"] = train
        d[f"ssl_bench_data_share{suffix}"] = d["ssl_bench_epoch_s"] / (train + d["ssl_bench_epoch_s"])
        # the naive loader's share if its decoding did not overlap the training at all
        d[f"naive_data_share{suffix}"] = d["naive_epoch_s"] / (train + d["naive_epoch_s"])
