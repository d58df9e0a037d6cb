#!/usr/bin/env python
"""Does ssl_bench scale to pools of tens of thousands of images?

The synthetic phantom grown to ``--sizes`` images (default 1k, 5k, 20k) at a small ``--image-size``
(default 64x32), with INbreast's shares of patients and malignant images. For each size, every
measurement in its own fresh process (so that each peak RSS is its own):

- ``generate``: rendering the phantom into the sharded cache (``ssl-bench data prepare`` for a
  real dataset), one shard at a time;
- ``load``: opening the cached set (the index: what the streaming path needs) and reading every
  image into memory (what the resident path needs), with the peak RSS of each;
- ``epoch``: the pretext stage of ``finetune`` (``--pretext``, default gsim, on the smoke
  profile's ``test_resnet``) for ``--epochs`` epochs over every image, resident
  (``data.streaming=off``) and streamed (``on``, ``--loader-workers`` DataLoader processes):
  throughput of the last epoch (images/s) and the peak RSS of the process and of its largest
  child process (when streaming, the loader workers: forked, so sharing the parent's pages);
- ``ray`` (``--ray-workers N``, default 2; 0 skips): the same pretext stage data-parallel on N
  Ray Train workers (``train.pretext_workers``) against one process, on the largest size that
  ``--ray-max`` allows (Ray's start-up is slow; the speed-up is of the training epochs alone).

    python benchmarks/scale.py --json scale.json          # 1k, 5k, 20k images (minutes)
    python benchmarks/scale.py --small --json scale.json  # 64 images (tests)

The streaming path should keep its peak RSS flat as N grows (the resident one grows by twice the
images' size), at no less than 0.9x the resident throughput where both fit.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MiB = 2**20


def cohort(n: int) -> dict:
    """INbreast's shape (387 images: 115 patients, 100 malignant) grown to ``n`` images."""
    return {"n_patients": max(2, round(n * 115 / 387)), "n_malignant": max(2, round(n * 100 / 387)),
            "n_benign": n - max(2, round(n * 100 / 387))}


def config(spec: dict, **flags):
    from ssl_bench.config import build_config

    return build_config("smoke", {"pretext": spec["pretext"], "transfer": "finetune"}, {
        "data.image_size": spec["image_size"], "data.cache_dir": spec["cache_dir"],
        "params.synthetic": cohort(spec["n"]), "train.batch_size": spec["batch"], "out": spec["cache_dir"], **flags})


def peak_rss() -> dict:
    """Peak resident memory (MiB) of this process and of its largest finished child."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rss_mib": round(self_kb / 1024, 1), "child_rss_mib": round(child_kb / 1024, 1)}


def child_generate(spec: dict) -> dict:
    from ssl_bench.data.loading import build_dataset

    dataset = build_dataset(config(spec))  # the registry's imports (torch, timm...) are not timed
    started = time.perf_counter()
    loaded = dataset.load()
    return {"seconds": time.perf_counter() - started, "n_images": len(loaded.samples), **peak_rss()}


def child_load(spec: dict) -> dict:
    import numpy as np

    from ssl_bench.data.loading import build_dataset

    dataset = build_dataset(config(spec))
    started = time.perf_counter()
    loaded = dataset.load()
    opened = time.perf_counter() - started
    open_rss = peak_rss()["rss_mib"]
    started = time.perf_counter()
    array = np.asarray(loaded.images)
    read = time.perf_counter() - started
    return {"open_s": opened, "open_rss_mib": open_rss, "read_all_s": read, "read_all_rss_mib": peak_rss()["rss_mib"],
            "images_mib": round(array.nbytes / MiB, 1), "n_images": len(array)}


def child_epoch(spec: dict) -> dict:
    import torch

    from ssl_bench.data.loading import load_dataset
    from ssl_bench.experiment.fold import build_parts
    from ssl_bench.training.images import dataset_images
    from ssl_bench.models.pretext_model import PretextModel
    from ssl_bench.training.context import FitContext
    from ssl_bench.training.stages import pretext_stage

    cpu = torch.device("cpu")
    cfg = config(spec, **{"data.streaming": spec["streaming"], "data.loader_workers": spec["loader_workers"]})
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    loaded = load_dataset(cfg)
    every = torch.arange(len(loaded.samples))
    images = dataset_images(cfg, loaded, cpu).index_select(0, every)  # as a fold takes its training rows
    labels = torch.from_numpy(loaded.labels.copy()).float()
    pretext, _ = build_parts(cfg)
    ctx = FitContext(config=cfg, pretext=pretext, images=images, labels=labels, device=cpu)
    pretext_stage(ctx, PretextModel(ctx.new_backbone(), pretext), spec["epochs"])
    seconds = [row["seconds"] for row in ctx.history]
    del ctx, images
    gc.collect()  # the loader's workers exit and are waited for: their RSS is counted
    return {"epoch_s": seconds, "img_s": len(every) / seconds[-1], "n_images": len(every), **peak_rss()}


def child_ray(spec: dict) -> dict:
    import torch

    from ssl_bench.data.loading import load_dataset
    from ssl_bench.experiment.fold import build_parts
    from ssl_bench.training.images import dataset_images
    from ssl_bench.models.pretext_model import PretextModel
    from ssl_bench.training.context import FitContext
    from ssl_bench.training.stages import pretext_stage

    cpu = torch.device("cpu")
    cfg = config(spec, **{"train.pretext_workers": spec["workers"], "data.streaming": "off"})
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    loaded = load_dataset(cfg)
    every = torch.arange(len(loaded.samples))
    images = dataset_images(cfg, loaded, cpu).index_select(0, every)
    labels = torch.from_numpy(loaded.labels.copy()).float()
    pretext, _ = build_parts(cfg)
    ctx = FitContext(config=cfg, pretext=pretext, images=images, labels=labels, device=cpu)
    started = time.perf_counter()
    pretext_stage(ctx, PretextModel(ctx.new_backbone(), pretext), spec["epochs"])
    total = time.perf_counter() - started
    seconds = [row["seconds"] for row in ctx.history]
    return {"epoch_s": seconds, "img_s": len(every) / seconds[-1], "total_s": total, "n_images": len(every)}


CHILDREN = {"generate": child_generate, "load": child_load, "epoch": child_epoch, "ray": child_ray}


def run_child(spec: dict, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sizes", default="1000,5000,20000", help="numbers of images (default 1000,5000,20000)")
    parser.add_argument("--image-size", default="64x32", help="HEIGHTxWIDTH (default 64x32)")
    parser.add_argument("--pretext", default="gsim", help="pretext task of the timed stage (default gsim)")
    parser.add_argument("--epochs", type=int, default=1, help="pretext epochs; the last is timed (default 1)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes when streaming (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray Train workers to compare with one process (0: skip)")
    parser.add_argument("--ray-max", type=int, default=5000, help="largest size the Ray comparison runs on")
    parser.add_argument("--resident-max", type=int, default=10**9,
                        help="largest size whose resident epoch is measured too (default: every size)")
    parser.add_argument("--cache-dir", default=None, help="cache folder to use and keep (default: a temporary one)")
    parser.add_argument("--small", action="store_true", help="one tiny size (64 images), for tests")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](spec)))
        return 0

    from ssl_bench.fileio import atomic_write_text

    sizes = [64] if args.small else [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="ssl_bench_scale_") as tmp:
        cache = args.cache_dir or tmp
        base = {"image_size": args.image_size, "cache_dir": cache, "pretext": args.pretext, "batch": args.batch,
                "epochs": args.epochs, "threads": args.threads}
        results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                               "load_average": os.getloadavg()}, "settings": {**vars(args), "sizes": sizes},
                   "sizes": {}}
        for n in sizes:
            spec = {**base, "n": n}
            row = {"generate": run_child({**spec, "kind": "generate"}, args.timeout),
                   "load": run_child({**spec, "kind": "load"}, args.timeout)}
            for streaming, name in (("off", "resident"), ("on", "stream")):
                if name == "resident" and n > args.resident_max:
                    continue
                row[name] = run_child({**spec, "kind": "epoch", "streaming": streaming,
                                       "loader_workers": args.loader_workers}, args.timeout)
            if "img_s" in row["resident"] and "img_s" in row["stream"]:
                row["stream_over_resident"] = row["stream"]["img_s"] / row["resident"]["img_s"]
            results["sizes"][str(n)] = row
            print(summary_line(n, row), flush=True)
        if args.ray_workers > 0:
            n = max([s for s in sizes if s <= args.ray_max] or sizes[:1])
            spec = {**base, "n": n, "kind": "ray"}
            one, many = run_child({**spec, "workers": 1}, args.timeout), \
                run_child({**spec, "workers": args.ray_workers}, args.timeout)
            results["ray"] = {"n_images": n, "workers": args.ray_workers, "one": one, "many": many}
            if "img_s" in one and "img_s" in many:
                results["ray"]["speedup"] = many["img_s"] / one["img_s"]
            print(f"ray: {n} images, 1 process {one.get('img_s', float('nan')):.0f} img/s, {args.ray_workers} "
                  f"Ray Train workers {many.get('img_s', float('nan')):.0f} img/s, speed-up "
                  f"{results['ray'].get('speedup', float('nan')):.2f}x", flush=True)
        errors = [f"{n} {k}: {v['error']}" for n, row in results["sizes"].items() for k, v in row.items()
                  if isinstance(v, dict) and "error" in v]
        errors += [f"ray {k}: {v['error']}" for k, v in results.get("ray", {}).items() if isinstance(v, dict) and "error" in v]
        if errors:
            results["errors"] = errors
            print("\n".join(errors), file=sys.stderr)
        if args.json:
            atomic_write_text(args.json, json.dumps(results, indent=2))
    return 1 if errors else 0


def summary_line(n: int, row: dict) -> str:
    def get(part, key, fmt="{:.1f}"):
        value = row.get(part, {}).get(key)
        return fmt.format(value) if isinstance(value, (int, float)) else "n/a"

    return (f"{n} images: generate {get('generate', 'seconds')} s, open {get('load', 'open_s', '{:.3f}')} s, "
            f"read all {get('load', 'read_all_s', '{:.2f}')} s ({get('load', 'images_mib')} MiB); pretext epoch "
            f"resident {get('resident', 'img_s', '{:.0f}')} img/s peak RSS {get('resident', 'rss_mib')} MiB, "
            f"streamed {get('stream', 'img_s', '{:.0f}')} img/s peak RSS {get('stream', 'rss_mib')} MiB "
            f"(largest child {get('stream', 'child_rss_mib')} MiB), ratio {row.get('stream_over_resident', float('nan')):.2f}")


if __name__ == "__main__":
    sys.exit(main())
