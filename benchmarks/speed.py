#!/usr/bin/env python
"""How fast is ssl_bench's training, next to a plain PyTorch loop, and what does Table II cost?

One process, one device, the same data and networks for every measurement:

(a) ``reference``: a plain PyTorch loop (``speed_reference.py``, no ssl_bench training code): the TSBN-U
    step (U-Net GSIM/MSE step, then ResNet50 forward + weighted BCE + collaborative loss step,
    as ``ssl_bench/transfer/collaborative.py``) and the supervised ResNet50 step. On CUDA: bf16
    autocast, channels_last, dataset already on the GPU, torch's defaults otherwise
    (``cudnn.benchmark`` off, foreach Adam). ``reference_tuned`` adds cuDNN autotuning and fused
    Adam (CUDA only), to separate those settings from the rest of the fast path.
(b) ``ssl_bench``: the same steps through ssl_bench's own code (``FitContext.train`` with the
    real ``CollaborativeTransfer`` / ``FineTune`` from ``build_parts``), steady state: the first
    epoch (cuDNN autotuning, compilation, graph capture) is timed apart as ``warmup_s``.
    ``ssl_bench_graphs`` (``--graphs``, CUDA): the same with the step captured in a CUDA graph.
    The ssl_bench path also augments every batch on the device; the reference does not.
(c) ``data``: one epoch's input cost through ssl_bench's cache (``load_cached_images``, read
    once per process, then batches gathered and augmented on the device) against a naive torch
    ``DataLoader`` that decodes and preprocesses every RLE-compressed DICOM every epoch.
(d) ``jobs`` (``--jobs-per-gpu N``): aggregate img/s of N concurrent processes, each training
    the ssl_bench TSBN-U step, against one such process.
(e) ``methods`` (``--methods``): steady epoch cost of every stage of the 7 Table II methods
    (``benchmarks/table2.yaml``) through the real transfers, and from it (or, without
    ``--methods``, from the measured steps with stated factors) the projected wall time of the
    full ``paper``-profile Table II: 7 methods x 5 folds x (pretext + downstream epochs) x the
    fold's training images of a 387-image dataset.

Run: ``python benchmarks/speed.py --device cuda --batch 4,16 --graphs --jobs-per-gpu 4 --methods
--json speed.json``; ``--small`` runs tiny sizes on the CPU in well under a minute (CI).
Throughput is images per second (a TSBN-U "image" is one image through both networks' steps).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # ssl_bench from this checkout; the sibling modules
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402

from ssl_bench.bench.plan import load_plan  # noqa: E402
from ssl_bench.components import display_name  # noqa: E402
from ssl_bench.config import PROFILES, parse_image_size, set_value  # noqa: E402
from ssl_bench.experiment.fold import build_parts  # noqa: E402
from ssl_bench.fileio import atomic_write_text  # noqa: E402
from ssl_bench.models.backbones import create_backbone  # noqa: E402
from ssl_bench.training.context import FitContext  # noqa: E402
from ssl_bench.training.device import GRAPHS_ENV, device_name, resolve_precision  # noqa: E402

from speed_data import data_share, measure_data  # noqa: E402
from speed_reference import (  # noqa: E402
    ReferenceSupervised,
    ReferenceTSBN,
    build_tsbn_networks,
    reference_batches,
)

TABLE2 = ROOT / "benchmarks" / "table2.yaml"
DATASET_IMAGES = 387  # INbreast-sized, as the synthetic default
FOLDS = 5
STEP_MODELS = {"tsbn_u": "TSBN-U", "resnet": "ResNet"}  # result key -> Table II method
GPU_STEP_SETTINGS = {"steps": 10, "epochs": 2}  # steps per timed epoch, timed epochs
SMALL_STEP_SETTINGS = {"steps": 2, "epochs": 1}


# ------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def method_configs(args, batch: int, extra: tuple[str, ...] = ()) -> dict:
    """The Table II methods' resolved configs (``benchmarks/table2.yaml``), at the measured size."""
    h, w = args.size
    # random init: the paper profile's ImageNet weights would need the network (timing is the same)
    sets = (f"data.image_size={h}x{w}", f"train.batch_size={batch}", "model.pretrained=none") + tuple(extra)
    if args.compile:
        sets += ("train.compile=true",)
    plan = load_plan(TABLE2, profile="smoke" if args.small else "paper", sets=sets)
    return {display_name(c): c for c in plan.configs}


def random_dataset(n: int, size, device: torch.device, seed: int = 0):
    """``n`` random images (float16 on the device, as DeviceImages holds them) and 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, *size, generator=g).half().to(device)
    labels = (torch.arange(n) % 3 == 0).float().to(device)  # both classes in every batch
    return images, labels


class StageTimer:
    """A ``TrainingProgress`` stand-in recording when each stage starts and each epoch ends
    (an epoch ends after ``FitContext.train``'s once-per-epoch device sync)."""

    enabled = False

    def __init__(self, on_epoch=None):
        self.stages: list[dict] = []
        self.on_epoch = on_epoch

    def start_stage(self, name, epochs, steps_per_epoch):
        self.stages.append({"name": name, "start": time.perf_counter(), "epochs": []})

    def step(self):
        pass

    def epoch_done(self, losses):
        self.stages[-1]["epochs"].append(time.perf_counter())
        if self.on_epoch is not None:
            self.on_epoch(self)

    def finish_stage(self):
        pass

    def __getattr__(self, name):  # start_folds, fold_done, ...: nothing to record
        return lambda *a, **k: None


def stage_times(stage: dict, n_images: int) -> dict:
    """Steady per-epoch seconds (epochs after the first) and the first epoch's seconds."""
    ends = stage["epochs"]
    warm = ends[0] - stage["start"]
    epoch = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else warm
    return {"epoch_s": epoch, "warmup_s": warm, "img_s": n_images / epoch, "s_per_img": epoch / n_images}


def measure_reference(kind: str, cfg, args, device, batch, tuned=False) -> dict:

    torch.backends.cudnn.benchmark = bool(tuned)
    torch.manual_seed(0)
    amp = resolve_precision(cfg.train.precision, device)
    if kind == "tsbn_u":
        step = ReferenceTSBN(*build_tsbn_networks(cfg), cfg, device, amp, tuned)
    else:
        step = ReferenceSupervised(create_backbone(cfg.model.backbone, None, 1, 1), cfg, device, amp, tuned)
    images, labels = random_dataset(args.steps * batch, args.size, device)
    images = images.float()  # a plain loop keeps float32 inputs
    for x, y in reference_batches(images, labels, batch, device):  # warm-up epoch
        step(x, y)
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in range(args.epochs):
        for x, y in reference_batches(images, labels, batch, device):
            step(x, y)
            n += batch
    sync(device)
    dt = time.perf_counter() - t0
    out = {"img_s": n / dt, "step_s": dt * batch / n, "peak_gib": peak_gib(device)}
    del step, images, labels
    free(device)
    return out


# ------------------------------------------------------------------- (b) ssl_bench's own path


def make_context(cfg, device, images, labels, progress):

    pretext, transfer = build_parts(cfg)
    ctx = FitContext(
        config=cfg, pretext=pretext, images=images, labels=labels, device=device,
        amp_dtype=resolve_precision(cfg.train.precision, device), progress=progress,
    )
    return ctx, transfer


def with_graphs(cfg, on: bool):
    cfg.train.cuda_graphs = bool(on)  # train.cuda_graphs (or SSL_BENCH_CUDA_GRAPHS) switches capture
    return cfg


def measure_ssl(kind: str, cfgs: dict, args, device, batch, graphs=False) -> dict:

    cfg = with_graphs(cfgs[STEP_MODELS[kind]], graphs)
    set_value(cfg, "train.epochs", 1 + args.epochs)
    set_value(cfg, "train.pretext_epochs", 0)
    torch.manual_seed(0)
    n = args.steps * batch
    images, labels = random_dataset(n, args.size, device)
    timer = StageTimer()
    ctx, transfer = make_context(cfg, device, images, labels, timer)
    transfer.fit(ctx)
    (stage,) = [s for s in timer.stages if s["name"] in ("collab", "finetune")]
    t = stage_times(stage, n)
    out = {"img_s": t["img_s"], "step_s": t["s_per_img"] * batch, "warmup_s": t["warmup_s"],
           "peak_gib": peak_gib(device), "compile": bool(cfg.train.compile)}
    if ctx.graph_stats:
        out["graph"] = ctx.graph_stats.get(stage["name"])
    del ctx, transfer, images, labels
    free(device)
    return out


def measure_steps(args, device, results, save) -> None:
    for batch in args.batch:
        cfgs = method_configs(args, batch)
        for kind in args.models:
            key = f"{kind}_b{batch}"
            row = results["steps"].setdefault(key, {"model": kind, "batch": batch})
            variants = [("reference", lambda: measure_reference(kind, cfgs[STEP_MODELS[kind]], args, device, batch))]
            if device.type == "cuda":
                variants.append(("reference_tuned", lambda: measure_reference(
                    kind, cfgs[STEP_MODELS[kind]], args, device, batch, tuned=True)))
            variants.append(("ssl_bench", lambda: measure_ssl(kind, method_configs(args, batch), args, device, batch)))
            if args.graphs and device.type == "cuda":
                variants.append(("ssl_bench_graphs", lambda: measure_ssl(
                    kind, method_configs(args, batch), args, device, batch, graphs=True)))
            for name, fn in variants:
                if args.variants and name not in args.variants:
                    continue
                try:
                    row[name] = fn()
                except Exception as exc:  # noqa: BLE001 - record and go on with the rest
                    row[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                    free(device)
                log(f"  {key:12s} {name:16s} {fmt_rate(row[name])}")
                save()
            ref = row.get("reference", {}).get("img_s")
            for name in ("ssl_bench", "ssl_bench_graphs"):
                if ref and row.get(name, {}).get("img_s"):
                    row[f"ratio_{name}"] = row[name]["img_s"] / ref
            row["ratio"] = row.get("ratio_ssl_bench")
            save()


# ------------------------------------------------------------------ (d) concurrent jobs


class StopMeasure(Exception):
    pass


def worker(spec: dict) -> None:
    """One job of the --jobs-per-gpu measurement: train TSBN-U until told to stop."""
    torch.set_num_threads(1)
    args = argparse.Namespace(**spec["args"])
    args.size = tuple(args.size)
    device = torch.device(args.device)

    cfg = with_graphs(method_configs(args, spec["batch"])["TSBN-U"], spec["graphs"])
    set_value(cfg, "train.epochs", 10**6)
    n = args.steps * spec["batch"]
    images, labels = random_dataset(n, args.size, device, seed=spec["rank"])
    state = {"t0": None, "epochs": 0}

    def on_epoch(timer):
        now = time.perf_counter()
        if state["t0"] is None:  # warm-up epoch done: report ready, wait for the others
            Path(spec["ready"]).write_text("ready")
            deadline = time.time() + 600
            while not Path(spec["go"]).exists():
                if time.time() > deadline:
                    raise StopMeasure("no go signal")
                time.sleep(0.005)
            state["t0"] = time.perf_counter()
            return
        state["epochs"] += 1
        if now - state["t0"] >= spec["duration"]:
            state["t1"] = now
            raise StopMeasure()

    ctx, transfer = make_context(cfg, device, images, labels, StageTimer(on_epoch))
    try:
        transfer.fit(ctx)
    except StopMeasure:
        pass
    dt = state.get("t1", time.perf_counter()) - (state["t0"] or time.perf_counter())
    imgs = state["epochs"] * n
    Path(spec["out"]).write_text(json.dumps({"img_s": imgs / dt if dt > 0 else 0.0, "images": imgs, "s": dt}))


class _ForkedJob:
    """The bits of ``subprocess.Popen`` that :func:`run_jobs` uses, for a forked process."""

    def __init__(self, proc):
        self.proc = proc

    def poll(self):
        return self.proc.exitcode

    def wait(self, timeout=None):
        self.proc.join(timeout)
        return self.proc.exitcode

    def kill(self):
        self.proc.kill()


def run_jobs(args, n_jobs: int, graphs: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ssl_bench_jobs_"))
    procs, specs = [], []
    try:
        base = {k: (sorted(v) if isinstance(v, set) else list(v) if isinstance(v, tuple) else v)
                for k, v in vars(args).items()}
        for r in range(n_jobs):
            spec = {"args": base, "batch": args.jobs_batch, "graphs": graphs, "rank": r,
                    "duration": args.jobs_seconds, "ready": str(tmp / f"ready{r}"),
                    "go": str(tmp / "go"), "out": str(tmp / f"out{r}.json")}
            specs.append(spec)
            if args.device == "cpu" and not args.jobs_spawn:
                # fork: no second import of torch and timm (seconds each on a small CPU); safe
                # here since the parent never ran a multi-threaded op (--small: one thread)
                import multiprocessing

                proc = multiprocessing.get_context("fork").Process(target=worker, args=(spec,))
                proc.start()
                procs.append(_ForkedJob(proc))
            else:  # CUDA cannot be used in a forked child: a fresh interpreter per job
                err = open(tmp / f"err{r}.txt", "w")  # a file: a full pipe would block the job
                procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                                              stdout=subprocess.DEVNULL, stderr=err, text=True))
                err.close()
        deadline = time.time() + args.jobs_start_timeout
        while not all(Path(s["ready"]).exists() for s in specs):
            if any(p.poll() is not None for p in procs) or time.time() > deadline:
                errs = [(tmp / f"err{r}.txt") for r in range(n_jobs)]
                raise RuntimeError("a job did not start: " + " | ".join(
                    e.read_text()[-400:] for e in errs if e.is_file() and e.stat().st_size))
            time.sleep(0.02)
        (tmp / "go").write_text("go")
        for p in procs:
            p.wait(timeout=args.jobs_seconds + 120)
        outs = [json.loads(Path(s["out"]).read_text()) for s in specs]
        return {"jobs": n_jobs, "aggregate_img_s": sum(o["img_s"] for o in outs),
                "per_job_img_s": [o["img_s"] for o in outs]}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def measure_jobs(args, results, save) -> None:
    j = results["jobs"]
    j.update(batch=args.jobs_batch, graphs=bool(args.jobs_graphs), seconds=args.jobs_seconds)
    j["one"] = run_jobs(args, 1, args.jobs_graphs)
    log(f"  1 job: {j['one']['aggregate_img_s']:.1f} img/s")
    save()
    j["many"] = run_jobs(args, args.jobs_per_gpu, args.jobs_graphs)
    j["ratio"] = j["many"]["aggregate_img_s"] / j["one"]["aggregate_img_s"]
    log(f"  {args.jobs_per_gpu} jobs: {j['many']['aggregate_img_s']:.1f} img/s aggregate ({j['ratio']:.2f}x)")
    save()


# ------------------------------------------------------------ (e) methods and projection


def measure_methods(args, device, results, save, graphs: bool) -> dict:

    out = {}
    batch = args.batch[0]
    for name, cfg in method_configs(args, batch).items():
        with_graphs(cfg, graphs)
        set_value(cfg, "train.epochs", 1 + args.epochs)
        set_value(cfg, "train.pretext_epochs", 1 + args.epochs)
        torch.manual_seed(0)
        n = args.steps * batch
        images, labels = random_dataset(n, args.size, device)
        timer = StageTimer()
        t0 = time.perf_counter()
        try:
            ctx, transfer = make_context(cfg, device, images, labels, timer)
            transfer.fit(ctx)
            stages = {s["name"]: stage_times(s, n) for s in timer.stages}
            # a method without training epochs (Non-spatial: one scikit-learn fit) costs its setup
            setup = timer.stages[0]["start"] - t0 if timer.stages else time.perf_counter() - t0
            out[name] = {"setup_s": setup, "stages": stages, "peak_gib": peak_gib(device)}
            if ctx.graph_stats:
                out[name]["graph"] = ctx.graph_stats
            del ctx, transfer
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        del images, labels
        free(device)
        log(f"  {name:12s} " + ("  ".join(f"{k} {v['img_s']:.1f} img/s" for k, v in out[name].get("stages", {}).items())
                                or out[name].get("error", "")))
        save()
    return out


def estimated_methods(results) -> dict:
    """Stage costs from the measured steps when the methods were not run (factors are guesses)."""
    b = results["args"]["batch"][0]
    row_r = results["steps"].get(f"resnet_b{b}", {})
    row_t = results["steps"].get(f"tsbn_u_b{b}", {})
    r = row_r.get("ssl_bench", {}).get("step_s")
    t = row_t.get("ssl_bench", {}).get("step_s")
    if not r or not t:
        return {}

    def st(step_s, why):
        return {"s_per_img": step_s / b, "img_s": b / step_s, "epoch_s": None, "warmup_s": 0.0, "source": why}

    dec = "estimated: 1.5x the ResNet50 step (backbone + decoder)"
    return {
        "ResNet": {"stages": {"finetune": st(r, "measured ResNet50 step")}},
        "SimCLR": {"stages": {"pretext": st(2 * r, "estimated: 2x ResNet50 (two views)"), "finetune": st(r, "measured")}},
        "CR-F-ResNet": {"stages": {"pretext": st(1.5 * r, dec), "finetune": st(r, "measured")}},
        "GM-F-ResNet": {"stages": {"pretext": st(1.5 * r, dec), "finetune": st(r, "measured")}},
        "GM-M-ResNet": {"stages": {"multitask": st(1.5 * r, dec)}},
        "TSBN-U": {"stages": {"collab": st(t, "measured TSBN-U step")}},
        "TSBN-R": {"stages": {"collab": st(t, "estimated: as TSBN-U (RDN not measured; likely slower)")}},
    }


def project(methods: dict, paper: dict, source: str, jobs_ratio: float | None) -> dict:
    """Wall time of the full Table II from per-image stage costs."""
    n_train = DATASET_IMAGES * (FOLDS - 1) / FOLDS
    per_method = {}
    for name, m in methods.items():
        if "stages" not in m:
            continue
        fold = m.get("setup_s", 0.0)
        for stage, t in m["stages"].items():
            epochs = paper["pretext_epochs"] if stage == "pretext" else paper["epochs"]
            fold += epochs * n_train * t["s_per_img"]
            if t.get("epoch_s"):
                fold += max(0.0, t["warmup_s"] - t["epoch_s"])  # first-epoch overhead
        per_method[name] = FOLDS * fold
    total = sum(per_method.values())
    out = {"source": source, "folds": FOLDS, "images": DATASET_IMAGES, "train_images_per_fold": n_train,
           "epochs": paper["epochs"], "pretext_epochs": paper["pretext_epochs"],
           "per_method_s": per_method, "total_s": total, "complete": len(per_method) >= 7}
    if jobs_ratio:
        out["jobs_ratio"] = jobs_ratio
        out["total_packed_s"] = total / jobs_ratio  # assumes every method packs like TSBN-U
    return out


# ---------------------------------------------------------------------------- reporting


def log(msg: str) -> None:
    print(msg, flush=True)


def fmt_rate(r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"][:160]
    extra = f" warm-up {r['warmup_s']:.1f}s" if "warmup_s" in r else ""
    if r.get("graph"):
        g = r["graph"]
        extra += f" graph replays {g['replays']}" + (f" FAILED {g['failed']}" if g.get("failed") else "")
    mem = f" peak {r['peak_gib']} GiB" if r.get("peak_gib") is not None else ""
    return f"{r['img_s']:8.1f} img/s ({r['step_s'] * 1e3:.1f} ms/step){extra}{mem}"


def hms(s: float) -> str:
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m{int(s % 60):02d}s"


def summary(results) -> None:
    log("\n=== summary: img/s (ratio = ssl_bench / reference) ===")
    log(f"device {results['env']['device']}, torch {results['env']['torch']}, size "
        f"{'x'.join(map(str, results['args']['size']))}, compile {results['args']['compile']}")
    for row in results["steps"].values():
        cells = []
        for name in ("reference", "reference_tuned", "ssl_bench", "ssl_bench_graphs"):
            if name in row:
                v = row[name]
                cells.append(f"{name} {v['img_s']:.1f}" if "img_s" in v else f"{name} ERROR")
        ratios = "  ".join(f"{k[6:]} {row[k]:.2f}x" for k in ("ratio_ssl_bench", "ratio_ssl_bench_graphs") if row.get(k))
        log(f"{STEP_MODELS[row['model']]:7s} b{row['batch']:<3d} " + " | ".join(cells) + f"  ratios: {ratios}")
    d = results.get("data", {})
    if "naive_over_ssl_bench" in d:
        log(f"data per epoch ({DATASET_IMAGES * (FOLDS - 1) // FOLDS} images): naive DICOM DataLoader "
            f"{d['naive_epoch_s']:.2f}s vs ssl_bench {d['ssl_bench_epoch_s'] * 1e3:.1f}ms "
            f"-> {d['naive_over_ssl_bench']:.0f}x; data share of a TSBN-U epoch: ssl_bench "
            f"{100 * d.get('ssl_bench_data_share', float('nan')):.2f}%, naive "
            f"{100 * d.get('naive_data_share', float('nan')):.1f}%"
            + (f" (with CUDA graphs: ssl_bench {100 * d['ssl_bench_data_share_graphs']:.2f}%)"
               if "ssl_bench_data_share_graphs" in d else ""))
    j = results.get("jobs", {})
    if "ratio" in j:
        log(f"jobs-per-gpu {j['many']['jobs']}: {j['many']['aggregate_img_s']:.1f} img/s aggregate vs "
            f"{j['one']['aggregate_img_s']:.1f} img/s for one job -> {j['ratio']:.2f}x")
    for key, p in results.get("projection", {}).items():
        per = ", ".join(f"{k} {v / 60:.1f}m" for k, v in p["per_method_s"].items())
        packed = f"; packed {p['jobs_ratio']:.2f}x -> {hms(p['total_packed_s'])}" if "total_packed_s" in p else ""
        log(f"Table II projection [{key}, {p['source']}]: {hms(p['total_s'])}{packed} ({per})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny sizes: runs on a CPU in well under a minute")
    ap.add_argument("--batch", default=None, help="batch size(s), comma-separated (default 4)")
    ap.add_argument("--size", default=None, help="HEIGHTxWIDTH (default 768x384; --small 64x32)")
    ap.add_argument("--compile", action="store_true", help="train.compile for the ssl_bench path")
    ap.add_argument("--graphs", action="store_true", help="also time ssl_bench with CUDA-graph capture")
    ap.add_argument("--jobs-per-gpu", type=int, default=None, help="concurrent jobs to compare with one (0: skip)")
    ap.add_argument("--jobs-graphs", action="store_true", help="jobs use CUDA graphs")
    ap.add_argument("--jobs-seconds", type=float, default=None)
    ap.add_argument("--methods", action="store_true", help="time every Table II method's stages")
    ap.add_argument("--methods-graphs", action="store_true", help="also time the methods with CUDA graphs")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: steps,data,jobs")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed epoch")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs after the warm-up epoch")
    ap.add_argument("--data-files", type=int, default=None)
    ap.add_argument("--variants", default="", help="only these step variants (comma-separated: "
                    "reference,reference_tuned,ssl_bench,ssl_bench_graphs)")
    ap.add_argument("--models", default="tsbn_u,resnet", help="step models to time: tsbn_u,resnet")
    ap.add_argument("--previous", default=None, help="results JSON of an earlier run: its steps, data "
                    "and jobs sections fill the sections skipped here (for the projection)")
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jobs-spawn", action="store_true", help=argparse.SUPPRESS)  # CUDA's way, on a CPU
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0


    os.environ.pop(GRAPHS_ENV, None)  # graphs on or off per variant, by the config (train.cuda_graphs)

    small = args.small
    args.size = parse_image_size(args.size or ("64x32" if small else "768x384"))
    args.batch = [int(b) for b in (args.batch or "4").split(",")]
    settings = SMALL_STEP_SETTINGS if small else GPU_STEP_SETTINGS
    args.steps = args.steps or settings["steps"]
    args.epochs = args.epochs or settings["epochs"]
    if args.jobs_per_gpu is None:
        args.jobs_per_gpu = 2 if small else 4
    args.jobs_batch = 4
    args.jobs_seconds = args.jobs_seconds or (2.0 if small else 6.0)
    args.jobs_start_timeout = 300
    args.data_files = args.data_files or (6 if small else 32)
    args.dicom_shape = (640, 400) if small else (4400, 2800)
    cpus = os.cpu_count() or 1
    args.loader_workers = min(2 if small else 8, cpus)
    args.cache_workers = 0  # one per core, as the datasets use it
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.variants = {v.strip() for v in args.variants.split(",") if v.strip()}
    args.models = [m.strip() for m in args.models.split(",") if m.strip() in STEP_MODELS]
    device = torch.device(args.device)
    if device.type == "cpu" and small:
        torch.set_num_threads(1)  # tiny tensors: threads cost more than they give


    paper = PROFILES["paper"]
    results = {
        "env": {"device": device_name(device), "torch": torch.__version__, "cpus": cpus,
                "python": sys.version.split()[0]},
        "args": {"device": args.device, "small": small, "size": list(args.size), "batch": args.batch,
                 "compile": args.compile, "graphs": args.graphs, "jobs_per_gpu": args.jobs_per_gpu,
                 "steps_per_epoch": args.steps, "timed_epochs": args.epochs},
        "paper": {"epochs": paper["train.epochs"], "pretext_epochs": paper["train.pretext_epochs"]},
        "steps": {}, "data": {}, "jobs": {}, "methods": {}, "projection": {},
    }

    def save():
        if args.json:
            atomic_write_text(args.json, json.dumps(results, indent=1, default=str))

    if args.previous and Path(args.previous).is_file():
        try:
            prev = json.loads(Path(args.previous).read_text())
            for key in ("steps", "data", "jobs"):
                if key in skip or (key == "jobs" and not (args.jobs_per_gpu and args.jobs_per_gpu > 1)):
                    results[key] = prev.get(key, {})
            results["previous"] = str(args.previous)
        except (OSError, ValueError) as exc:
            log(f"cannot read --previous {args.previous}: {exc}")

    t_start = time.perf_counter()
    # eager-only sections first: a hard crash in a CUDA-graph variant (steps) cannot lose them
    sections = [
        ("data", lambda: measure_data(args, device, results, save,
                                      method_configs(args, args.batch[0])["TSBN-U"], log)),
    ]
    if args.jobs_per_gpu and args.jobs_per_gpu > 1:
        sections.append(("jobs", lambda: measure_jobs(args, results, save)))
    sections.append(("steps", lambda: measure_steps(args, device, results, save)))
    if args.methods:
        sections.append(("methods", lambda: results["methods"].__setitem__(
            "eager", measure_methods(args, device, results, save, graphs=False))))
        if args.methods_graphs and device.type == "cuda":
            sections.append(("methods_graphs", lambda: results["methods"].__setitem__(
                "graphs", measure_methods(args, device, results, save, graphs=True))))
    for name, fn in sections:
        if name in skip:
            continue
        log(f"[{name}]")
        t_section = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:1000]
            log(f"  {name} FAILED: {results['errors'][name]}")
        results.setdefault("section_s", {})[name] = round(time.perf_counter() - t_section, 2)
        save()

    data_share(results)
    jobs_ratio = results["jobs"].get("ratio")
    for key, methods in results["methods"].items():
        results["projection"][key] = project(methods, results["paper"], f"methods measured ({key})", jobs_ratio)
    if not results["projection"]:
        est = estimated_methods(results)
        if est:
            results["projection"]["estimated"] = project(est, results["paper"], "estimated from the steps", jobs_ratio)
    results["elapsed_s"] = time.perf_counter() - t_start
    save()
    summary(results)
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
