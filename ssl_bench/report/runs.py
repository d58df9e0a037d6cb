"""Run directories loaded for reports (through :class:`~ssl_bench.experiment.rundir.RunDir`, which
owns their layout and says which folds are complete), and the check that several runs can be
compared on one leaderboard.

A run with some folds missing is loaded as *partial* (with a warning), never refused; a path that
is not a run directory, or a file that cannot be parsed, is a :class:`~ssl_bench.errors.UserError`
that names the path and what is wrong. Per-fold metrics are recomputed from ``predictions.csv`` with
:func:`ssl_bench.experiment.metrics.fold_metrics`, every fold metric of today's table, so a run
written before a metric existed reports it too. Results edited after the run are refused
(:func:`load_run`): a ``predictions.csv`` whose digest differs from the one its ``metrics.json``
recorded (any column), a ``metrics.json`` whose metrics (those it holds) disagree with it, and,
for runs written before the digest too, predictions of other images, patients or labels than
``folds.csv`` holds and a ``summary.json`` whose pooled AUC the predictions do not give.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from ..experiment.metric_specs import PAPER_THRESHOLD, metric_specs
from ..experiment.metrics import fold_metrics, pooled_auc
from ..experiment.rundir import RunDir

_TOLERANCE = 1e-6  # metrics.json vs recomputation


@dataclass
class RunResult:
    """One run directory, loaded: its files, per-fold metrics and pooled out-of-fold predictions."""

    path: Path
    method: str  # display name: summary.json "method", else config method / name
    config: dict[str, Any]
    env: dict[str, Any]
    summary: dict[str, Any]
    n_folds: int  # folds the run was configured for
    fold_metrics: dict[int, dict[str, Any]]  # recomputed from predictions.csv (fractions)
    stored_metrics: dict[int, dict[str, float]]  # as written in metrics.json
    predictions: pd.DataFrame  # pooled: image_id, patient_id, label, score, laterality, fold
    warnings: list[str] = field(default_factory=list)
    degenerate: dict[int, str] = field(default_factory=dict)  # fold -> why its scores say nothing
    subgroups: pd.DataFrame | None = None  # subgroups.csv (image_id, view, laterality, ...); None before it
    saliency: pd.DataFrame | None = None  # saliency/saliency.csv (ssl-bench explain), rows whose overlay exists

    @property
    def completed_folds(self) -> list[int]:
        return sorted(self.fold_metrics)

    @property
    def missing_folds(self) -> list[int]:
        return [k for k in range(self.n_folds) if k not in self.fold_metrics]

    @property
    def partial(self) -> bool:
        return bool(self.missing_folds)

    @property
    def data(self) -> dict[str, Any]:
        return self.config.get("data") or {}

    @property
    def dataset(self) -> str:
        return str(self.data.get("dataset") or (self.env.get("dataset") or {}).get("name") or "?")

    def fold_images(self, k: int) -> frozenset[str]:
        return frozenset(self.predictions.loc[self.predictions["fold"] == k, "image_id"])


def _method_name(path: Path, config: dict, summary: dict) -> str:
    for value in (summary.get("method"), config.get("method"), config.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return path.name


class NoCompletedFold(UserError):
    """A run directory without one completed fold: a run still training its first fold, or one
    stopped before it (a report of several runs leaves it out with a note)."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path


def load_run(path: str | Path, allow_edited: bool = False) -> RunResult:
    """Load one run directory. Missing folds make it partial; a broken directory is a UserError,
    and so are results edited after the run unless ``allow_edited``, which reports them as
    warnings: a ``predictions.csv`` that is not the file the run wrote (the digest in its
    ``metrics.json``: any column, any value), a ``metrics.json`` that disagrees with it, held-out
    images, or their patients or labels, other than ``folds.csv`` records, and a complete run's
    ``summary.json`` whose ``oof_auc`` the predictions do not give. Folds written before the
    digest are checked by the last three only (an edited laterality goes unseen there)."""
    rundir = RunDir.open(path)
    p = rundir.path
    config = rundir.read_config()
    warnings: list[str] = []
    env = rundir.read_optional_json("env.json")
    if not env:
        warnings.append("env.json missing: provenance incomplete")
    summary = rundir.read_optional_json("summary.json")
    try:
        n_folds = int((config.get("data") or {}).get("folds") or summary.get("folds") or 0)
    except (TypeError, ValueError):
        raise UserError(f"{p / 'config.yaml'}: data.folds must be an integer") from None
    n_folds = max([n_folds, *(k + 1 for k in rundir.present_folds())])

    recomputed: dict[int, dict[str, Any]] = {}
    stored: dict[int, dict[str, float]] = {}
    frames = []
    edited: list[str] = []
    assigned = rundir.read_folds() if (p / "folds.csv").is_file() else None
    for k in rundir.completed_folds(n_folds):
        stored[k] = rundir.read_metrics(k)
        pred = rundir.read_predictions(k)
        pred["fold"] = k
        frames.append(pred)
        if rundir.predictions_as_written(k, stored[k]) is False:
            edited.append(f"folds/{k}/predictions.csv is not the file the run wrote (its "
                          f"sha256 differs from the one folds/{k}/metrics.json recorded)")
        recomputed[k] = fold_metrics(pred["label"], pred["score"], operating_threshold(stored[k]))
        # what the run wrote: a metric added since is computed, not missing
        off = [s.name for s in metric_specs(pooled=False)
               if s.name in stored[k] and not _close(stored[k][s.name], recomputed[k][s.name])]
        if off:
            edited.append(f"fold {k}: metrics.json disagrees with predictions.csv on {', '.join(off)}")
        if assigned is not None:
            edited += _against_folds_csv(k, pred, assigned)
    complete = bool(summary) and len(recomputed) == n_folds
    if complete and isinstance(summary.get("oof_auc"), (int, float)):
        pooled = pd.concat(frames, ignore_index=True)
        if not _close(summary["oof_auc"], pooled_auc(pooled["label"], pooled["score"])):
            edited.append("summary.json's oof_auc is not the pooled AUC of the folds' predictions.csv")
    if edited and not allow_edited:
        raise UserError(f"{p} was edited after the run: {'; '.join(edited)}. Use --allow-edited to "
                        f"report it anyway (numbers are recomputed from predictions.csv)")
    warnings += edited
    if not frames:
        raise NoCompletedFold(
            p, f"{p}: no completed fold (expected folds/<k>/metrics.json and folds/<k>/predictions.csv"
            f" for k = 0..{max(n_folds, 1) - 1})"
        )
    predictions = pd.concat(frames, ignore_index=True)
    run = RunResult(p, _method_name(p, config, summary), config, env, summary, n_folds,
                    recomputed, stored, predictions, warnings, subgroups=rundir.read_subgroups(),
                    saliency=rundir.read_saliency())
    if run.partial:
        missing = ", ".join(map(str, run.missing_folds))
        warnings.insert(0, f"partial: {len(recomputed)}/{n_folds} folds (missing {missing})")
    dup = predictions["image_id"].duplicated()
    if dup.any():
        example = predictions["image_id"][dup].iloc[0]
        warnings.append(f"{int(dup.sum())} image(s) held out more than once (e.g. {example})")
    return run


def operating_threshold(metrics: dict) -> float:
    """A fold's operating threshold as its ``metrics.json`` recorded it (0.5 for runs written
    before operating points existed)."""
    value = metrics.get("op_threshold", PAPER_THRESHOLD)
    return PAPER_THRESHOLD if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _against_folds_csv(k: int, pred: pd.DataFrame, assigned: pd.DataFrame) -> list[str]:
    """How fold ``k``'s predictions differ from ``folds.csv``: other images, or other patients or
    labels for the same images (what runs written before the predictions' digest can be checked by)."""
    held = assigned[assigned["fold"] == k].drop_duplicates("image_id").astype({"image_id": str})
    if set(pred["image_id"]) != set(held["image_id"]):
        return [f"fold {k}: predictions.csv holds other images than folds.csv assigns "
                f"({len(set(pred['image_id']) ^ set(held['image_id']))} differ)"]
    record = held.set_index("image_id").loc[pred["image_id"]]
    off = []
    if (record["patient_id"].astype(str).to_numpy() != pred["patient_id"].astype(str).to_numpy()).any():
        off.append("patient_id")
    if (pd.to_numeric(record["label"], errors="coerce").to_numpy() != pred["label"].to_numpy()).any():
        off.append("label")
    return [f"fold {k}: predictions.csv disagrees with folds.csv on {' and '.join(off)}"] if off else []


def find_runs(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories among ``paths``, as a shell glob ``DIR/*`` gives them, and one note for
    each thing not taken as it was given: plain files (the leaderboard files that ``bench``
    writes beside its runs) are skipped, and a folder without ``config.yaml`` that holds run
    directories (a bench's ``--out``) stands for them. A folder that holds only such folders
    (``bench-runs/``, the parent of every bench's output) is an error naming them: several
    benches are not one leaderboard."""
    runs, files, notes = [], [], []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            files.append(p.name)
        elif p.is_dir() and not RunDir.is_run(p):
            inside = _runs_in(p)
            if inside:
                runs += inside
                what = "the run directory" if len(inside) == 1 else f"the {len(inside)} run directories"
                notes.append(f"Reported {what} inside {p}: {', '.join(c.name for c in inside)}.")
                continue
            benches = [c for c in sorted(p.iterdir()) if c.is_dir() and _runs_in(c)]
            if benches:
                raise UserError(f"{p} holds the output folders of {len(benches)} bench(es), not run directories: "
                                f"report one of them, e.g. ssl-bench report {benches[0]}")
            runs.append(p)  # an error that load_run names
        else:
            runs.append(p)  # a run, or an error that load_run names
    if not runs:
        raise UserError("no run directories among " + ", ".join(map(str, paths)))
    if files:
        notes.append(f"Skipped {len(files)} file(s) that are not run directories: {', '.join(files)}.")
    return runs, notes


def _runs_in(folder: Path) -> list[Path]:
    """The run directories directly inside ``folder`` (hidden folders, e.g. ``.pretext-cache``, are no runs)."""
    return sorted(c for c in folder.iterdir() if not c.name.startswith(".") and RunDir.is_run(c))


def _close(stored: Any, recomputed: float) -> bool:
    try:
        a = float(stored)
    except (TypeError, ValueError):
        return False
    if math.isnan(a) or math.isnan(recomputed):
        return math.isnan(a) and math.isnan(recomputed)
    return abs(a - recomputed) <= _TOLERANCE


# ---------------------------------------------------------------------------------------------
# comparability


def _where(runs: list[RunResult]) -> str:
    return ", ".join(str(r.path) for r in runs)


def comparability_issues(runs: list[RunResult]) -> list[str]:
    """What makes these runs not comparable: dataset, folds, split, seed, images per fold."""
    issues = []
    for label, get in (
        ("dataset", lambda r: r.dataset),
        ("number of folds", lambda r: r.n_folds),
        ("split", lambda r: r.data.get("split", "?")),
        ("seed", lambda r: r.config.get("seed", "?")),
    ):
        groups: dict[str, list[RunResult]] = {}
        for r in runs:
            groups.setdefault(str(get(r)), []).append(r)
        if len(groups) > 1:
            parts = "; ".join(f"{v!r} in {_where(rs)}" for v, rs in groups.items())
            issues.append(f"{label} differs: {parts}")
    if issues:  # different data or folds: image sets differ for sure, say only why
        return issues
    first = runs[0]
    for r in runs[1:]:
        for k in sorted(set(first.completed_folds) & set(r.completed_folds)):
            a, b = first.fold_images(k), r.fold_images(k)
            if a != b:
                issues.append(
                    f"fold {k} holds different images in {first.path} and {r.path}"
                    f" ({len(a ^ b)} image ids differ)"
                )
                break
    return issues


def check_comparable(runs: list[RunResult], allow_mixed: bool = False) -> list[str]:
    """Raise UserError naming the differences unless ``allow_mixed``; else return them as notes."""
    issues = comparability_issues(runs) if len(runs) > 1 else []
    if issues and not allow_mixed:
        raise UserError(
            "runs are not comparable: " + "; ".join(issues)
            + ". Use --allow-mixed (allow_mixed=True) to report them anyway."
        )
    return issues


# ---------------------------------------------------------------------------------------------
# provenance


def _size(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value) if value not in (None, "") else "?"


def _short(commit: Any) -> str:
    if not commit:
        return "none"
    text = str(commit)
    return text[:12] + ("-dirty" if text.endswith("-dirty") and len(text) > 18 else "")


def dataset_summary(runs: list[RunResult]) -> dict[str, Any]:
    """Dataset name and size per class (env.json ``dataset``, else counted from predictions)."""
    run = runs[0]
    info = run.env.get("dataset") if isinstance(run.env.get("dataset"), dict) else {}
    pred = run.predictions.drop_duplicates("image_id")
    counted = {"n_images": len(pred), "n_benign": int((pred["label"] == 0).sum()),
               "n_malignant": int((pred["label"] == 1).sum()),
               "n_patients": int(pred["patient_id"].nunique())}
    source = "env.json" if info else "held-out predictions"
    return {"name": run.dataset, "source": source,
            **{k: info.get(k, counted[k]) if info else counted[k] for k in counted}}


def run_dates(runs: list[RunResult]) -> str:
    """First start to last finish over the runs (ISO times from env.json)."""
    started = sorted(str(r.env["started"]) for r in runs if r.env.get("started"))
    finished = sorted(str(r.env["finished"]) for r in runs if r.env.get("finished"))
    if not started and not finished:
        return "unknown"
    unfinished = sum(1 for r in runs if not r.env.get("finished"))
    text = f"{started[0] if started else '?'} to {finished[-1] if finished else '?'}"
    return text + (f" ({unfinished} run(s) without a finish time)" if unfinished else "")


def provenance_table(runs: list[RunResult]) -> pd.DataFrame:
    """One row per run: where it is, how it was trained, with what software, on what, when."""
    rows = []
    for r in runs:
        train = r.config.get("train") or {}
        model = r.config.get("model") or {}
        env = r.env
        rows.append({
            "method": r.method,
            "run": str(r.path),
            "pretext / transfer": f"{r.config.get('pretext', '?')} / {r.config.get('transfer', '?')}",
            "backbone": model.get("backbone") or "?",
            "profile": r.config.get("profile") or "?",
            "image size": _size(r.data.get("image_size")),
            "epochs (pretext)": f"{train.get('epochs', '?')} ({train.get('pretext_epochs', '?')})",
            "batch size": train.get("batch_size", "?"),
            "learning rate": train.get("lr", "?"),
            "device": env.get("device") or "?",
            "versions": " ".join(f"{k} {env[k]}" for k in ("ssl_bench", "torch", "timm", "python")
                                 if env.get(k)) or "?",
            "git commit": _short(env.get("git_commit")),
            "finished": env.get("finished") or "?",
        })
    return pd.DataFrame(rows)
