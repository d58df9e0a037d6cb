"""How much of the built-in phantom's class position-free features give away (issue 23, item 2).

For each family of :mod:`ssl_bench.models.position_free` (intensity histogram and order
statistics, moments and entropy, connected components, gradient and Laplacian statistics, local
maxima, row and column profiles, a thumbnail) and for their union: the pooled out-of-fold AUC of
scikit-learn's gradient-boosted trees, 5 stratified folds grouped by patient
(:func:`~ssl_bench.models.position_free.probe_auc`), on the default INbreast-shaped cohort (387
images, 115 patients) as ``ssl-bench run`` loads it (through the image cache), with the time the
features took. A family above about 0.65 is a shortcut: the class read without a lesion's shape.

    python benchmarks/phantom_probes.py                          # 128x64 (the quick profile's)
    python benchmarks/phantom_probes.py --size 128x64 --size 768x384
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def probe_table(size: tuple[int, int], seed: int, cache_dir: str | None) -> list[tuple[str, int, float, float]]:
    """``(family, number of features, pooled AUC, seconds for the features)`` rows at ``size``."""
    from ssl_bench.config import build_config
    from ssl_bench.data.loading import load_dataset
    from ssl_bench.models import position_free as pf

    flags = {"data.image_size": size, "device": "cpu"}
    if cache_dir:
        flags["data.cache_dir"] = cache_dir
    start = t0 = time.perf_counter()
    loaded = load_dataset(build_config("quick", flags=flags))
    print(f"{size[0]}x{size[1]}: {len(loaded.samples)} images loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    labels = loaded.samples["label"].to_numpy()
    patients = loaded.samples["patient_id"].to_numpy()
    rows, parts = [], []
    for family in pf.FAMILIES:
        t0 = time.perf_counter()
        features, _ = pf.compute(loaded.images, family)
        seconds = time.perf_counter() - t0
        parts.append(features)
        rows.append((family, features.shape[1], pf.probe_auc(features, labels, patients, seed), seconds))
        print(f"  {family:<13} {rows[-1][1]:>4} features  AUC {rows[-1][2]:.3f}  {seconds:6.1f} s", flush=True)
    union = np.concatenate(parts, axis=1)
    rows.append(("union", union.shape[1], pf.probe_auc(union, labels, patients, seed), sum(r[3] for r in rows)))
    print(f"  {'union':<13} {rows[-1][1]:>4} features  AUC {rows[-1][2]:.3f}  {rows[-1][3]:6.1f} s", flush=True)
    wall = time.perf_counter() - start
    print(f"  wall time at {size[0]}x{size[1]} (loading, features, probes): {wall:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", type=parse_size, help="HxW (repeatable; default 128x64)")
    parser.add_argument("--seed", type=int, default=0, help="fold shuffling and the trees' random_state")
    parser.add_argument("--cache-dir", default=None, help="the image cache (default: the toolkit's)")
    args = parser.parse_args()
    sizes = args.size or [(128, 64)]
    tables = {size: probe_table(size, args.seed, args.cache_dir) for size in sizes}
    header = "| family | features | " + " | ".join(f"AUC {h}x{w} | features s {h}x{w}" for h, w in sizes) + " |"
    print()
    print(header)
    print("|" + "---|" * (2 + 2 * len(sizes)))
    for i, (family, n, _, _) in enumerate(tables[sizes[0]]):
        cells = " | ".join(f"{tables[s][i][2]:.3f} | {tables[s][i][3]:.1f}" for s in sizes)
        print(f"| {family} | {n} | {cells} |")


if __name__ == "__main__":
    main()
