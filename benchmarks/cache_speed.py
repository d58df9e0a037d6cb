"""Time the image cache: ``data prepare`` cold (parallel decode) and warm (cache hits).

Writes an INbreast-style tree of ``--n`` 16-bit DICOMs of ``--size`` (default: 387 images of
4084x3328, the INbreast release) in a temporary folder, then loads it twice through the
``inbreast`` dataset exactly as ``ssl-bench data prepare`` does, with a fresh cache.

    python benchmarks/cache_speed.py                      # the full INbreast-size run
    python benchmarks/cache_speed.py --n 24 --size 1024x832   # a small CI-friendly run

Only four distinct images are rendered and encoded (L/R x CC/MLO); the others are byte copies
under their own names, which the cache treats as different files (it keys on path, size and
mtime), so every image is decoded and preprocessed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage


def render_templates(size: tuple[int, int], seed: int) -> tuple[list, np.ndarray]:
    """Four canonical synthetic mammograms at ``size``, rendered at a quarter and upsampled."""
    from ssl_bench.data.synthetic_mammo import generate

    small = (max(64, size[0] // 4), max(32, size[1] // 4))
    table, images = generate(image_size=small, n_patients=1, n_benign=2, n_malignant=2, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for image in images.astype(np.float32):
        big = ndimage.zoom(image, (size[0] / small[0], size[1] / small[1]), order=1)[: size[0], : size[1]]
        tissue = big > 0.05  # quantum noise in the breast only; FFDM background is clean
        big[tissue] += rng.normal(0, 0.004, int(tissue.sum())).astype(np.float32)
        out.append(np.clip(big, 0, 1))
    return list(table.itertuples(index=False)), np.stack(out)


def build_tree(root: Path, n: int, size: tuple[int, int], compress: str | None, seed: int = 0) -> None:
    from ssl_bench.data.inbreast import SHEET_COLUMNS
    from ssl_bench.data.inbreast_writer import birads_for, patient_hash
    from ssl_bench.data.release_writer import write_dicom

    rows, images = render_templates(size, seed)
    folder = root / "AllDICOMs"
    folder.mkdir(parents=True)
    templates = []
    for k, (row, image) in enumerate(zip(rows, images)):
        stored = image if row.laterality == "L" else image[:, ::-1]
        path = root / f"template{k}.dcm"
        write_dicom(path, np.round(stored * 16383).astype(np.uint16), laterality=row.laterality,
                    view=row.view, patient="template", bits_stored=14, compress=compress)
        templates.append((row, path))
    lines = [";".join(SHEET_COLUMNS)]
    for i in range(n):
        row, template = templates[i % len(templates)]
        name = f"{30000000 + i:08d}"
        token = "ML" if row.view == "MLO" else "CC"
        shutil.copyfile(template, folder / f"{name}_{patient_hash(i // 4)}_MG_{row.laterality}_{token}_ANON.dcm")
        label = int(i % 4 == 0)
        lines.append(";".join(["removed", "removed", row.laterality, row.view, "201001", name, "2", birads_for(label, name)]))
    (root / "INbreast.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    for _, path in templates:
        path.unlink()


def main(argv=None) -> int:
    from ssl_bench.config import parse_image_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=387, help="number of images (default 387)")
    parser.add_argument("--size", default="4084x3328", help="DICOM HEIGHTxWIDTH (default 4084x3328)")
    parser.add_argument("--image-size", default="768x384", help="preprocessed HEIGHTxWIDTH (default 768x384)")
    parser.add_argument("--compress", choices=["rle", "none"], default="rle", help="DICOM encoding (default rle)")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per core)")
    parser.add_argument("--dir", default=None, help="work folder to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    size = parse_image_size(args.size, "--size")
    image_size = parse_image_size(args.image_size, "--image-size")

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ssl_bench_cache_speed_"))
    try:
        root, cache = work / "inbreast", work / "cache"
        started = time.perf_counter()
        build_tree(root, args.n, size, None if args.compress == "none" else args.compress)
        on_disk = sum(p.stat().st_size for p in (root / "AllDICOMs").iterdir()) / 2**30
        print(f"wrote {args.n} DICOMs {size[0]}x{size[1]} ({args.compress}, {on_disk:.1f} GiB) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)

        from ssl_bench.data.inbreast import INbreast

        times = []
        for run in ("cold", "warm"):
            dataset = INbreast(root=str(root), image_size=image_size, cache_dir=str(cache), workers=args.workers)
            started = time.perf_counter()
            loaded = dataset.load()
            times.append(time.perf_counter() - started)
            print(f"{run}: {len(loaded.samples)} images -> {image_size[0]}x{image_size[1]} in {times[-1]:.1f} s "
                  f"({1000 * times[-1] / len(loaded.samples):.0f} ms/image)", flush=True)
        workers = args.workers or os.cpu_count()
        print(f"cold {times[0]:.1f} s with {workers} worker(s) on {os.cpu_count()} CPU(s), warm {times[1]:.2f} s, "
              f"speed-up {times[0] / times[1]:.0f}x")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
