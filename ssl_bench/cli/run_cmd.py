"""``ssl-bench run``: one method (pretext x transfer x networks x dataset), k-fold cross-validated."""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

import click
from rich.markup import escape
from rich.table import Table

from ..components import display_name, run_name
from ..config import LOG_BACKENDS, PROFILES, build_config, load_yaml, parse_image_size
from ..console import make_console, working
from ..experiment.metric_specs import OPERATING, PAPER, MetricSpec, metric_specs
from ..fileio import OutOfSpace


out_console = make_console()
err_console = make_console(stderr=True)

#: where the ``ssl-bench`` group keeps the arguments it was given (``ctx.meta``, which every
#: command's context shares), so that a command can print the command line that resumes it
ARGV_KEY = "ssl_bench.argv"


def command_line(extra: tuple[str, ...] = ()) -> str:
    """This invocation's command line, quoted for a shell, with ``extra`` arguments appended
    unless it holds them already (``--resume``)."""
    ctx = click.get_current_context(silent=True)
    args = list(ctx.meta[ARGV_KEY]) if ctx is not None and ARGV_KEY in ctx.meta else sys.argv[1:]
    args += [a for a in extra if a not in args]
    return " ".join(shlex.quote(str(a)) for a in ["ssl-bench", *args])


def _terminated(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_sigterm():
    """``kill`` (SIGTERM) stops a command as cleanly as Ctrl-C: both raise KeyboardInterrupt."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


SPLITS = ["patient", "image", "official"]
SPLIT_HELP = ("Folds grouped by patient (default), image-level, or 'official': the dataset's own "
              "train/test split (CBIS-DDSM, VinDr-Mammo) as one fold, fold 0 = its test set.")
TEST_DATASET_HELP = ("Train on all of --dataset and test on all of this registered dataset, "
                     "preprocessed identically (one fold).")
PRETEXT_DATA_HELP = ("Run the pretext stage (finetune, linear, knn) on this registered dataset "
                     "instead of the fold's training images, e.g. 'folder': every image under "
                     "--pretext-data-root, no labels (only a pretext task that uses labels reads "
                     "the pool's); the held-out fold's patients are left out; the stage is cached "
                     "in OUT/.pretext-cache and reused by every fold and label fraction it fits.")


def per_profile(key: str) -> str:
    """Each profile's value of a config key, for help texts: ``2 in smoke, 14 in quick, 30 in paper``."""
    def text(value) -> str:
        return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)

    return ", ".join(f"{text(PROFILES[p][key])} in {p}" for p in PROFILES)


def config_options(f):
    """Options of ``run`` that map onto config keys (help texts give each profile's default)."""
    opts = [
        click.option("--profile", type=click.Choice(["smoke", "quick", "paper"]), default=None,
                     help="Settings preset (default: paper on CUDA, else quick)."),
        click.option("--dataset", "data__dataset", default=None, help="Registered dataset (default: synthetic)."),
        click.option("--data-root", "data__root", default=None, help="Folder of the dataset as shipped."),
        click.option("--folds", "data__folds", type=int, default=None, help="Number of CV folds (default 5)."),
        click.option("--split", "data__split", type=click.Choice(SPLITS), default=None, help=SPLIT_HELP),
        click.option("--test-dataset", "data__test_dataset", default=None, metavar="NAME", help=TEST_DATASET_HELP),
        click.option("--test-data-root", "data__test_root", default=None, help="Folder of the --test-dataset."),
        click.option("--pretext-data", "pretext_data__dataset", default=None, metavar="DATASET",
                     help=PRETEXT_DATA_HELP),
        click.option("--pretext-data-root", "pretext_data__root", default=None,
                     help="Folder of the --pretext-data dataset."),
        click.option("--on-bad-image", "data__on_bad_image", type=click.Choice(["fail", "skip"]), default=None,
                     help="Stop on bad inputs (default) or skip and record them."),
        click.option("--epochs", "train__epochs", type=int, default=None,
                     help=f"Downstream/supervised epochs (default: the profile's, {per_profile('train.epochs')}; "
                          f"pretext stage: train.pretext_epochs, {per_profile('train.pretext_epochs')})."),
        click.option("--batch-size", "train__batch_size", type=int, default=None,
                     help=f"Default: the profile's ({per_profile('train.batch_size')})."),
        click.option("--pretext-workers", "train__pretext_workers", type=int, default=None,
                     help="Ray Train workers of the pretext stage, data-parallel (default 1: this process)."),
        click.option("--image-size", "data__image_size", default=None,
                     help=f"HEIGHTxWIDTH (default: the profile's, {per_profile('data.image_size')})."),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="auto | cpu | cuda | cuda:N"),
        click.option("--compile/--no-compile", "train__compile", default=None, help="torch.compile the networks."),
        click.option("--out", default=None, help="Parent folder of run directories (default: runs)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="YAML config (e.g. a run's config.yaml)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any config key, e.g. --set train.lr=3e-4 --set params.gsim.d=0.3"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def log_options(f):
    """``--log`` and ``--log-uri`` (config ``log.backend``, ``log.uri``), shared by ``run`` and ``bench``."""
    f = click.option("--log-uri", "log__uri", default=None, metavar="DIR|URI",
                     help="tensorboard: parent folder of the event files (default: RUN/logs); mlflow: "
                          "tracking URI (default: an SQLite store, RUN/mlflow.db).")(f)
    return click.option("--log", "log__backend", type=click.Choice(list(LOG_BACKENDS)), default=None,
                        help="Also stream each epoch's history (losses, lr, seconds) to TensorBoard or "
                             "MLflow (pip install \"ssl-bench[tensorboard]\" / \"ssl-bench[mlflow]\").")(f)


def parse_fractions(text: str | None) -> tuple[float, ...]:
    """``--label-fraction 0.1,0.25,1.0`` as a tuple of floats in (0, 1] (none given: ``()``)."""
    from ..errors import ConfigError

    if text is None or str(text).strip() == "":
        return ()
    values = []
    for part in str(text).split(","):
        try:
            f = float(part)
        except ValueError:
            raise ConfigError(f"--label-fraction expects comma-separated numbers in (0, 1], got '{text}'") from None
        if not (0 < f <= 1):
            raise ConfigError(f"--label-fraction values must be in (0, 1], got {part.strip()}")
        values.append(f)
    if len(set(values)) != len(values):
        raise ConfigError(f"--label-fraction lists a fraction twice: '{text}'")
    return tuple(values)


LABEL_FRACTION_HELP = ("Train on this share of each fold's training patients (stratified, grouped by "
                       "patient, nested), e.g. 0.25 or 0.1,0.25,0.5,1.0 (one run directory per "
                       "fraction, named -f<fraction>); the held-out folds never change, and a fraction "
                       "trains as many optimiser steps as all the labels would (train.label_budget).")


def collect_flags(kwargs: dict) -> dict:
    flags = {}
    for key in list(kwargs):
        if key in ("profile", "config_file", "sets", "quiet"):
            continue
        value = kwargs.pop(key)
        if value is None:
            continue
        key = key.replace("__", ".")
        if key == "data.image_size":
            value = parse_image_size(value, "--image-size")
        flags[key] = value
    return flags


def _shown(spec: MetricSpec, value) -> str:
    return "-" if value is None or value != value else f"{spec.shown(value):.2f}"


def _probability(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _mean_std(mean: dict, std: dict, key: str, shown: Callable[[Any], str]) -> str:
    return f"{shown(mean.get(key))} ± {shown(std.get(key))}" if key in mean else ""


def metrics_table(title: str, fold_metrics: dict[int, dict], summary: dict | None,
                  auc_interval: tuple[float, float] | None = None) -> Table:
    """The fold metrics of the ``run`` table (:mod:`ssl_bench.experiment.metric_specs`, percent)
    at the paper's threshold 0.5, each fold's operating threshold (chosen on its training
    predictions; a probability, the score it calls malignant from, as ``predict`` uses it) and
    those at it, mean ± std, the pooled metrics of the ``run`` table and degenerate folds;
    ``auc_interval``: the pooled AUC's 95% confidence interval, printed beside it."""
    at_05, at_op = metric_specs("run", threshold=PAPER), metric_specs("run", threshold=OPERATING)
    cells: list[tuple[str, Callable[[Any], str]]] = [
        *((s.name, partial(_shown, s)) for s in at_05),
        ("op_threshold", _probability),
        *((s.name, partial(_shown, s)) for s in at_op),
    ]
    table = Table(title=escape(title))  # a method or run name: the user's text, not rich markup
    table.add_column("fold")
    for key, _ in cells:
        table.add_column("op thr" if key == "op_threshold" else key, justify="right")
    table.add_column("flag")
    for k, metrics in sorted(fold_metrics.items()):
        table.add_row(str(k), *(shown(metrics.get(key)) for key, shown in cells),
                      "degenerate" if metrics.get("degenerate") else "")
    if summary:
        mean, std = summary["mean"], summary["std"]
        table.add_row("mean ± std", *(_mean_std(mean, std, key, shown) for key, shown in cells), "", style="bold")
        pooled = summary.get("pooled") or {}
        lines = [f"pooled out-of-fold AUC {summary['oof_auc']:.4f}"]
        if auc_interval is not None:
            lines[0] += f" [{auc_interval[0]:.3f}, {auc_interval[1]:.3f}] (95% CI, patients as clusters)"
        lines[0] += "".join(f" · {spec.title} {pooled[spec.compute]:.4f}"
                            for spec in metric_specs("run", pooled=True) if spec.compute in pooled)
        lines.append("values in percent but op thr, a probability; threshold metrics at 0.5 as in TSBN; "
                     "op = each fold's operating point, chosen on its training predictions (Youden)")
        for k, reason in (summary.get("degenerate_folds") or {}).items():
            lines.append(f"fold {k} is degenerate: {reason}")
        table.caption = "\n".join(lines)
    return table


@click.command("run")
@click.option("--pretext", default=None, help="Pretext task (ssl-bench list pretexts).")
@click.option("--transfer", default=None, help="Transfer strategy (ssl-bench list transfers).")
@click.option("--backbone", "model__backbone", default=None,
              help=f"Downstream timm model (default: the profile's, {per_profile('model.backbone')}); "
                   "ViTs are built for the run's image size.")
@click.option("--pretrained", "model__pretrained", default=None, metavar="imagenet|TAG|hf-hub:NAME|PATH|none",
              help="Backbone initialisation: timm's ImageNet weights (the paper profile's), timm weights "
                   "by tag (resnet50.tv_in1k, vit_small_patch14_dinov2.lvd142m) or Hugging Face hub "
                   "repository (hf-hub:org/name), all through timm's download (the network, or a cache "
                   "filled by 'ssl-bench weights fetch'); a local weights file (e.g. one 'ssl-bench "
                   "export' wrote); or none (random; the other profiles').")
@click.option("--pretext-net", "model__pretext_net", default=None, help="Pretext network for collab (unet, rdn).")
@click.option("--fold", type=int, default=None, help="Run only this fold (0-based).")
@click.option("--name", default=None, help="Run directory name (default: pretext-transfer[-net]).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--label-fraction", "label_fraction", default=None, metavar="F[,F...]", help=LABEL_FRACTION_HELP)
@config_options
@log_options
def run(profile, config_file, sets, quiet, label_fraction, **kwargs):
    """Train and cross-validate one method; writes OUT/NAME/: config.yaml, folds.csv, env.json,
    summary.json and folds/<k>/ (metrics.json, predictions.csv, model.pt)."""
    # torch loads only when a command runs, so --help stays fast
    with working("loading torch", err_console, enabled=not quiet):
        from ..training.device import default_profile

    file_values = load_yaml(config_file) if config_file else {}
    flags = collect_flags(kwargs)
    configs = []  # every fraction's config resolved (and checked) before any trains
    for fraction in parse_fractions(label_fraction) or (None,):
        if fraction is not None:
            flags["data.label_fraction"] = fraction
        configs.append(build_config(profile, file_values, flags, sets, default_profile=default_profile))
    try:
        with stop_on_sigterm():
            for cfg in configs:
                run_one(cfg, profile, file_values, quiet)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: " + escape(interrupted_line(configs)),
                          highlight=False, soft_wrap=True)
        sys.exit(130)
    except OutOfSpace as exc:  # one line (the group prints it, exit 1): the file, what is kept, the command
        kept, total = kept_folds(configs)
        raise exc.keeping(f"{kept} {'is' if total == 1 else 'are'} complete and kept" if total
                          else "no fold was complete yet",
                          rerun=f"rerun the same command (it trains only the missing folds): {command_line()}") from None


def kept_folds(configs) -> tuple[str, int]:
    """What the run directories of ``configs`` hold complete (``"2 of 5 folds of runs/x"`` per
    run directory, joined) and how many folds that is in all."""
    from ..experiment.rundir import RunDir  # pandas loads only when a command runs, so --help stays fast

    kept, total = [], 0
    for cfg in configs:
        rundir = RunDir(Path(cfg.out).expanduser() / run_name(cfg))
        done = len(rundir.completed_folds(cfg.data.folds)) if RunDir.is_run(rundir.path) else 0
        kept.append(f"{done} of {cfg.data.folds} folds of {rundir.path}")
        total += done
    return ", ".join(kept), total


def interrupted_line(configs) -> str:
    """After Ctrl-C: what it leaves (each run directory's complete folds, kept) and the command
    that resumes: the same one (a run reopens its directory and trains only the missing folds)."""
    kept, total = kept_folds(configs)
    checkpointed = any(cfg.train.checkpoint_every > 0 for cfg in configs)
    unfinished = " (the unfinished fold from its last checkpoint)" if checkpointed else ""
    if total == 0:
        return f"no fold was complete yet; the same command starts again{unfinished}: {command_line()}"
    return (f"{kept} {'is' if total == 1 else 'are'} complete and kept; "
            f"the same command resumes with the missing ones{unfinished}: {command_line()}")


def run_one(cfg, profile, file_values, quiet) -> None:
    """Run one resolved config and print its metrics table."""
    how = "given" if profile or file_values.get("profile") else f"default for device '{cfg.device}'"
    out_console.print(
        f"profile [bold]{cfg.profile}[/] ({escape(how)}) · "
        + escape(f"{cfg.pretext} + {cfg.transfer} · backbone {cfg.model.backbone} · dataset {cfg.data.dataset} · "
                 f"image {cfg.data.image_size[0]}x{cfg.data.image_size[1]}"
                 + (f" · label fraction {cfg.data.label_fraction:g}" if cfg.data.label_fraction < 1 else "")),
        highlight=False, soft_wrap=True,
    )
    with working("loading timm and scikit-learn", err_console, enabled=not quiet):
        from ..experiment.run import run_method
    prepared, summary = run_method(cfg, show_progress=not quiet)
    done = prepared.rundir.completed_folds(cfg.data.folds)
    fold_metrics = {k: prepared.rundir.read_metrics(k) for k in done}
    out_console.print(metrics_table(display_name(cfg), fold_metrics, summary,
                                    pooled_auc_interval(prepared.rundir, done) if summary else None))
    out_console.print(f"run directory: {prepared.rundir.path}", highlight=False, markup=False, soft_wrap=True)


def pooled_auc_interval(rundir, folds) -> tuple[float, float] | None:
    """The 95% confidence interval of the pooled out-of-fold AUC, patients as clusters (Obuchowski
    1997, as the leaderboard gives it); None where it is undefined (a class held by fewer than
    two patients)."""
    import pandas as pd  # loaded after a run only: run --help stays fast

    from ..report.pooled import clustered_auc_interval

    predictions = pd.concat([rundir.read_predictions(k) for k in folds], ignore_index=True)
    lo, hi = clustered_auc_interval(predictions["label"].to_numpy(dtype=int), predictions["score"].to_numpy(dtype=float),
                                    predictions["patient_id"].astype(str).to_numpy())
    return None if lo != lo else (lo, hi)
