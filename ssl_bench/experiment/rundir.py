"""The run directory: the one module that writes it, reads it and says what it holds.

```
<out>/<run-name>/config.yaml   the fully resolved config (rerunning it reproduces the run)
                 folds.csv     image_id, patient_id, label, fold: the folds every job must use
                               (-1: training only, with --split official or --test-dataset)
                 subgroups.csv image_id and its subgroup variables: view, laterality and, where the
                               dataset records them, density, lesion_type, manufacturer (blank: unknown)
                 env.json      provenance (versions, git commit, device, dates, dataset size)
                 summary.json  mean and std over folds, pooled metrics, degenerate folds (once all folds are done)
                 skipped.csv   inputs left out with --on-bad-image skip (if any)
                 saliency/     Grad-CAM overlays of the top true/false positives and false negatives
                               (ssl-bench explain; bench), saliency/saliency.csv lists them
                 failed/fold-<k>.txt   traceback of a bench job that failed after its retries
<out>/<run-name>/folds/<k>/metrics.json  predictions.csv  model.pt  history.csv
                 folds/.<k>.checkpoint.pt   fold k's training state while it trains (train.checkpoint_every)
<out>/<run-name>/logs/fold-<k>/  TensorBoard events (--log tensorboard)   mlflow.db  MLflow store (--log mlflow)
```

``history.csv``: one row per trained epoch, ``stage, epoch``, each mean loss of the stage (e.g.
``bce``; collab also ``pretext`` and ``ct``), ``lr`` and ``seconds``.

``predictions.csv``: ``image_id, patient_id, label, score, laterality`` (score = probability of
malignancy; laterality may be empty). ``metrics.json``: the Table II metrics at threshold 0.5,
``op_threshold`` and the ``op_*`` metrics at the fold's own operating point, ``degenerate``,
and the fold's training subset: the requested ``label_fraction`` (``data.label_fraction``) and the
actual ``n_train_images`` and ``n_train_patients`` (runs written before label fractions lack them:
read as fraction 1), and the ``epochs`` and ``pretext_epochs`` it trained (``train.label_budget``
scales them for a fraction: experiment/label_budget.py), and ``predictions_sha256``, the digest of
the fold's ``predictions.csv`` as written (:func:`text_digest`), so that an edit of any of its
columns is seen (:meth:`RunDir.predictions_as_written`; folds written before it lack it). ``summary.json`` repeats
``label_fraction`` and, per fold, those four numbers (``train_subsets``).

A fold is *complete* when its results (``metrics.json`` and ``predictions.csv``) exist: that is
what every reader (resume, bench, report) counts. ``model.pt`` is written with them but is only
needed to score new images, so published runs may drop the weights and still report. A fold's
three files are written into ``folds/.<k>.tmp-<pid>/`` and the folder is renamed to ``folds/<k>``
in one step, so a fold exists completely or not at all and a complete fold is never rewritten;
every other file is written atomically (:mod:`ssl_bench.fileio`). Leftovers of a killed process
are hidden names (``.<k>.tmp-*``, ``.<file>.*``) that no reader mistakes for results. One process
at a time writes a run directory (:meth:`RunDir.claim`: an OS lock on ``.lock``); a second one
stops with one line.

``folds/.<k>.checkpoint.pt`` (with ``train.checkpoint_every``) is fold ``k``'s training state
every few epochs; its contents are :mod:`ssl_bench.experiment.fold_checkpoint`'s. Its name is
hidden (it is never a result), it is stamped with :func:`config_key` (a digest of the settings that
decide the results), and it is removed once the fold is complete; :meth:`RunDir.remove_leftovers`
keeps the checkpoint of an unfinished fold.

``model.pt``'s contents (tensors and plain values) are :mod:`ssl_bench.experiment.model_file`'s.
This module writes and reads no torch file itself, so that reading a finished run (``ssl-bench
report``) imports neither torch nor timm.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from ..config import VOLATILE, Config, check_path_name, load_yaml, migrate, save_yaml, without_roles
from ..data.subgroups import SUBGROUP_COLUMNS
from ..errors import UserError, exception_text
from ..fileio import atomic_write_bytes, atomic_write_text, out_of_space_error

RESULT_FILES = ("metrics.json", "predictions.csv")
MODEL_FILE = "model.pt"
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"  # --log tensorboard: one event folder per fold
MLFLOW_STORE = "mlflow.db"  # --log mlflow without --log-uri: an SQLite store (MLflow 3 retired the file store)
PREDICTION_COLUMNS = ("image_id", "patient_id", "label", "score", "laterality", "calibrated")
PREDICTIONS_DIGEST = "predictions_sha256"  # metrics.json: text_digest of predictions.csv as written
FOLD_COLUMNS = ("image_id", "patient_id", "label", "fold")
SUBGROUPS_FILE = "subgroups.csv"
SALIENCY_DIR = "saliency"
#: saliency/saliency.csv: one row per overlay (``file`` relative to the run directory)
SALIENCY_COLUMNS = ("kind", "rank", "image_id", "patient_id", "fold", "label", "score", "threshold", "file")

#: run directories this process holds the lock of (path -> open lock file)
_CLAIMED: dict[str, Any] = {}
_TEMP_FOLD = re.compile(r"^\.\d+\.tmp-")
_TEMP_FILE = re.compile(r"^\.(config\.yaml|env\.json|summary\.json|folds\.csv|skipped\.csv|fold-\d+\.txt)\..+")
_CHECKPOINT = re.compile(r"^\.(\d+)\.checkpoint\.pt$")
_TEMP_CHECKPOINT = re.compile(r"^\.\.\d+\.checkpoint\.pt\..+")  # fileio.atomic_write's temporary name


def to_json(data: Any) -> str:
    """JSON with NaN written as null (valid JSON for every reader).

    Args:
        data: JSON values in dicts, lists and tuples; every non-finite float (infinities too) becomes null.

    Returns:
        The JSON text, indented by 2, ending in a newline.
    """

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), indent=2) + "\n"


def read_json(path: Path, null_is_nan: bool = False) -> dict[str, Any]:
    """A JSON object from ``path``; ``null_is_nan`` turns top-level nulls back into NaN.

    Args:
        path: the JSON file.
        null_is_nan: read a null value of a top-level key as NaN (how ``metrics.json`` stores NaN).

    Returns:
        The object as a dict.

    Raises:
        UserError: the file cannot be read, is not valid JSON, or holds no object.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    if null_is_nan:  # metrics.json writes NaN (e.g. AUC of a one-class fold) as null
        data = {k: (math.nan if v is None else v) for k, v in data.items()}
    return data


def text_digest(data: bytes) -> str:
    """The sha256 of a text file's bytes with CRLF line ends read as LF (a checkout that converts
    line ends changes no value; any other change of any byte changes the digest).

    Args:
        data: the file's bytes.

    Returns:
        The hexadecimal sha256 digest.
    """
    return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()


def read_run_table(path: Path, what: str, columns: Sequence[str], remedy: str, **read_csv: Any) -> pd.DataFrame:
    """One of the run directory's own CSV tables, checked to be one: a damaged file is one error line.

    Args:
        path: the CSV file.
        what: what the file is, for the message (``"a folds table"``).
        columns: the columns it must have.
        remedy: what the user can do about a damaged file, appended to the message.
        **read_csv: keyword arguments of :func:`pandas.read_csv` (the column types).

    Returns:
        The table as read.

    Raises:
        UserError: the file cannot be read, is not UTF-8 CSV, or lacks one of ``columns``.
    """
    try:
        table = pd.read_csv(path, **read_csv)
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged (not UTF-8 text, not {what}); {remedy}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{path} is damaged (not {what}: {exception_text(exc)}); {remedy}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{path} is damaged (no column {', '.join(missing)}; {what} has "
                        f"{', '.join(columns)}); {remedy}")
    return table


def read_predictions(path: Path) -> pd.DataFrame:
    """A fold's ``predictions.csv``, checked: ids as strings, labels 0/1, finite scores.

    Args:
        path: the CSV file; it needs ``image_id``, ``label`` and ``score`` columns.

    Returns:
        A table with the columns of :data:`PREDICTION_COLUMNS`: ``patient_id`` is ``image_id`` where the
        file has none, ``laterality`` ``""`` and ``calibrated`` NaN where the file lacks them (older runs).

    Raises:
        UserError: the file cannot be read, lacks a needed column, has no rows, or holds a score that is
            not a finite number or a label other than 0 and 1 (the message names the line).
    """
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str, "laterality": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    missing = [c for c in ("image_id", "label", "score") if c not in df.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(PREDICTION_COLUMNS)}"
            f", found {', '.join(map(str, df.columns)) or 'none'}"
        )
    if df.empty:
        raise UserError(f"{path}: no predictions (the file has a header only)")
    if "patient_id" not in df.columns:
        df["patient_id"] = df["image_id"]
    score = pd.to_numeric(df["score"], errors="coerce")
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~np.isfinite(score.to_numpy(dtype=float))  # NaN from text or empty cells, or inf
    if bad.any():
        row = int(bad.argmax())
        raise UserError(f"{path}: column 'score' must hold finite numbers, found {df['score'].iloc[row]!r}"
                        f" on line {row + 2}")
    if not label.isin([0, 1]).all():
        row = int((~label.isin([0, 1])).to_numpy().argmax())
        raise UserError(f"{path}: column 'label' must be 0 or 1, found {df['label'].iloc[row]!r}"
                        f" on line {row + 2}")
    out = pd.DataFrame({"image_id": df["image_id"].astype(str), "patient_id": df["patient_id"].astype(str)})
    out["label"] = label.astype(int).to_numpy()
    out["score"] = score.astype(float).to_numpy()
    # breast side, for breast-level metrics; absent in runs written before it was recorded
    out["laterality"] = df["laterality"].fillna("").astype(str).to_numpy() if "laterality" in df else ""
    # the probability calibrated on the fold's training images (experiment/calibration.py); NaN
    # in runs written before calibration
    out["calibrated"] = pd.to_numeric(df["calibrated"], errors="coerce").to_numpy(dtype=float) \
        if "calibrated" in df else np.nan
    return out


def comparable_config(config: dict, cls: type = Config) -> dict:
    """The settings of a config dict of the current schema (``Config.to_dict()``, or a saved one
    from :meth:`RunDir.read_config`) that decide a run's results: all but those whose role is
    volatile (:mod:`ssl_bench.config`), and the label budget only where a label fraction below 1
    gives it something to decide. ``cls`` is the config's class (whose fields declare the roles).

    Args:
        config: the config dict.
        cls: the config's class; default :class:`~ssl_bench.config.Config`.

    Returns:
        A new dict of the settings compared.
    """
    out = without_roles(config, (VOLATILE,), cls)
    if (out.get("data") or {}).get("label_fraction", 1.0) == 1.0:
        (out.get("train") or {}).pop("label_budget", None)
    return out


def config_key(cfg: Config) -> str:
    """A digest of the settings of ``cfg`` that decide a run's results (:func:`comparable_config`).

    Args:
        cfg: the run's config, compared as it would be saved (tuples as lists).

    Returns:
        The hexadecimal sha256 of those settings as JSON with sorted keys.
    """
    as_saved = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # tuples become lists, as on disk
    return hashlib.sha256(json.dumps(comparable_config(as_saved, type(cfg)), sort_keys=True).encode()).hexdigest()


class RunDir:
    """Paths, writers and readers of one run directory.

    Args:
        path: the run directory, not checked (:meth:`create` and :meth:`open` check theirs).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path, name: str) -> "RunDir":
        """``<out>/<name>/`` with its ``folds/`` folder, checked to lie directly inside ``out``
        (``name`` is one folder name, not a path) and writable.

        Args:
            out: the output folder (``~`` expanded); created when missing.
            name: the run's name (:func:`ssl_bench.components.run_name`).

        Returns:
            The run directory; an existing one is reused as it is.

        Raises:
            ConfigError: ``name`` cannot be a folder name (:func:`~ssl_bench.config.check_path_name`).
            UserError: the folder would lie outside ``out``, or cannot be created or written.
            OutOfSpace: the device or the disk quota is full.
        """
        parent = Path(out).expanduser()
        path = parent / check_path_name(name, "run name")
        if path.resolve().parent != parent.resolve():
            raise UserError(f"run name {name!r} would write outside --out {parent}")
        try:
            (path / "folds").mkdir(parents=True, exist_ok=True)
            probe = path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            full = out_of_space_error(exc, path)
            if full is not None:
                raise full from None
            raise UserError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory (one with a ``config.yaml``), for reading.

        Args:
            path: the run directory.

        Returns:
            The run directory.

        Raises:
            UserError: ``path`` does not exist, is a file, or has no ``config.yaml``.
        """
        p = Path(path)
        if not p.exists():
            raise UserError(f"run directory not found: {p}")
        if not p.is_dir():
            raise UserError(f"not a run directory: {p} is a file")
        if not (p / "config.yaml").is_file():
            raise UserError(f"not a run directory: {p} has no config.yaml")
        return cls(p)

    def claim(self) -> None:
        """Make this process the run directory's only writer until it exits: an exclusive OS
        lock on ``<run>/.lock`` (released by the kernel when the process ends, even on
        ``kill -9``, so a lock is never stale). A second process gets one clear error line
        instead of mixing its folds or configuration into this run. On file systems without
        ``flock`` (some network mounts) the run goes on unlocked.

        A run directory this process has claimed already is not locked again. The lock file records
        the process id, the host and the time, which the second process's error names.

        Raises:
            UserError: another process holds the lock, or the lock file cannot be opened.
            OutOfSpace: the device or the disk quota is full.
        """
        key = str(self.path.resolve())
        if key in _CLAIMED:
            return  # this process holds it already (a second run in the same process)
        lock = self.path / ".lock"
        try:
            fh = open(lock, "a+")
        except OSError as exc:
            full = out_of_space_error(exc, lock)
            if full is not None:
                raise full from None
            if lock.is_dir():
                raise UserError(f"{lock} is a folder, not the lock file ssl-bench keeps there; remove it and "
                                f"rerun (ssl-bench keeps nothing in it)") from None
            raise UserError(f"cannot open {lock}, the lock file of the run directory: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"{self.path} is being written by another ssl-bench process ({holder}); "
                            f"wait for it to finish, or choose another --out or --name") from None
        except OSError:
            fh.close()
            return  # no flock here: nothing to hold
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"PID {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            fh.flush()
        except OSError as exc:
            fh.close()
            full = out_of_space_error(exc, self.path / ".lock")
            if full is not None:
                raise full from None
            raise
        _CLAIMED[key] = fh

    @staticmethod
    def is_run(path: Path) -> bool:
        """Whether ``path`` holds a ``config.yaml`` (is a run directory).

        Args:
            path: the folder to test.
        """
        return (path / "config.yaml").is_file()

    # ---- folds ---------------------------------------------------------------------------
    def fold_dir(self, k: int) -> Path:
        """Fold ``k``'s folder, ``folds/<k>`` (whether it exists or not).

        Args:
            k: the fold's index (0-based).
        """
        return self.path / "folds" / str(k)

    def fold_done(self, k: int) -> bool:
        """Whether fold ``k`` is complete: its :data:`RESULT_FILES` exist (``model.pt`` is not needed).

        Args:
            k: the fold's index (0-based).
        """
        d = self.fold_dir(k)
        return all((d / f).is_file() for f in RESULT_FILES)

    def completed_folds(self, n_folds: int) -> list[int]:
        """The complete folds (:meth:`fold_done`) among ``0 .. n_folds - 1``.

        Args:
            n_folds: the number of folds of the run.

        Returns:
            Their indices, ascending.
        """
        return [k for k in range(n_folds) if self.fold_done(k)]

    def present_folds(self) -> list[int]:
        """Indices of every ``folds/<k>`` folder, complete or not (temporary folders excluded)."""
        folds = self.path / "folds"
        return sorted(int(d.name) for d in folds.iterdir() if d.is_dir() and d.name.isdigit()) \
            if folds.is_dir() else []

    def checkpoint_path(self, k: int) -> Path:
        """Fold ``k``'s training checkpoint, ``folds/.<k>.checkpoint.pt`` (whether it exists or not).

        Args:
            k: the fold's index (0-based).
        """
        return self.path / "folds" / f".{k}.checkpoint.pt"

    def model_path(self, k: int) -> Path:
        """Fold ``k``'s ``model.pt`` (whether it exists or not).

        Args:
            k: the fold's index (0-based).
        """
        return self.fold_dir(k) / MODEL_FILE

    def write_fold(self, k: int, metrics: dict, predictions: pd.DataFrame, model: bytes,
                   history: pd.DataFrame | None = None) -> None:
        """Write a fold's files (and its training history) into a temporary folder, then rename
        it into place. ``model`` is the content of ``model.pt``
        (:func:`ssl_bench.experiment.model_file.model_bytes`): the run directory places it
        without knowing its format, which keeps torch out of reading a run. ``metrics.json``
        gets the digest of ``predictions.csv`` (``predictions_sha256``).

        A complete fold is never rewritten: when fold ``k`` is complete already, or another process
        completes it meanwhile, its files stay and these are dropped. Either way the fold's checkpoint
        is removed. On any failure, Ctrl-C included, nothing of the fold is kept.

        Args:
            k: the fold's index (0-based).
            metrics: the fold's metrics, written to ``metrics.json`` (:func:`to_json`).
            predictions: the fold's predictions, written to ``predictions.csv`` without the index.
            model: the bytes of ``model.pt``.
            history: the training history, written to ``history.csv``; None writes none.

        Raises:
            OutOfSpace: the device or the disk quota filled up while writing.
        """
        final = self.fold_dir(k)
        if self.fold_done(k):  # never rewrite a completed fold
            self.checkpoint_path(k).unlink(missing_ok=True)
            return
        tmp = final.parent / f".{k}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        writing = tmp
        try:
            tmp.mkdir(parents=True)
            table = predictions.to_csv(index=False).encode("utf-8")
            files = [("metrics.json", to_json({**metrics, PREDICTIONS_DIGEST: text_digest(table)}).encode("utf-8")),
                     ("predictions.csv", table), (MODEL_FILE, model)]
            if history is not None:
                files.append((HISTORY_FILE, history.to_csv(index=False).encode("utf-8")))
            for name, data in files:
                writing = tmp / name
                writing.write_bytes(data)
        except BaseException as exc:  # a half-written fold never stays behind (Ctrl-C included)
            shutil.rmtree(tmp, ignore_errors=True)
            full = out_of_space_error(exc, writing, kept=(f"nothing of fold {k} was kept",)) \
                if isinstance(exc, Exception) else None  # Ctrl-C stays itself
            if full is not None:
                raise full from exc
            raise
        if self.fold_done(k):  # another process finished this fold meanwhile: keep its files
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            if final.exists():  # an incomplete leftover, never a complete fold (checked above)
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not self.fold_done(k):  # lost a race to a complete fold is fine; anything else is not
                    raise
        self.checkpoint_path(k).unlink(missing_ok=True)  # the fold is complete: nothing to resume

    def read_metrics(self, k: int) -> dict:
        """Fold ``k``'s ``metrics.json``, nulls read as NaN.

        Args:
            k: the fold's index (0-based).

        Returns:
            The metrics as a dict.

        Raises:
            UserError: as :func:`read_json`.
        """
        return read_json(self.fold_dir(k) / "metrics.json", null_is_nan=True)

    def read_predictions(self, k: int) -> pd.DataFrame:
        """Fold ``k``'s ``predictions.csv``, checked as :func:`read_predictions` does.

        Args:
            k: the fold's index (0-based).

        Returns:
            The predictions table.

        Raises:
            UserError: as :func:`read_predictions`.
        """
        return read_predictions(self.fold_dir(k) / "predictions.csv")

    def predictions_as_written(self, k: int, metrics: dict) -> bool | None:
        """Whether fold ``k``'s ``predictions.csv`` is, byte for byte (line ends aside), the file
        the run wrote, by the digest its ``metrics.json`` (``metrics``) recorded; None for a fold
        written before the digest was recorded (nothing to compare with).

        Args:
            k: the fold's index (0-based).
            metrics: the fold's ``metrics.json`` as read (:meth:`read_metrics`).

        Returns:
            True when the digests match, False when not, None without a recorded digest.

        Raises:
            UserError: ``predictions.csv`` cannot be read.
        """
        recorded = metrics.get(PREDICTIONS_DIGEST)
        if not isinstance(recorded, str):
            return None
        try:
            data = (self.fold_dir(k) / "predictions.csv").read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {self.fold_dir(k) / 'predictions.csv'}: {exc}") from None
        return text_digest(data) == recorded

    def read_history(self, k: int) -> pd.DataFrame | None:
        """Fold ``k``'s ``history.csv``, or None for runs written before it was recorded.

        Args:
            k: the fold's index (0-based).

        Returns:
            The history table, or None when the fold has no ``history.csv``.
        """
        path = self.fold_dir(k) / HISTORY_FILE
        return pd.read_csv(path) if path.is_file() else None

    def folds_with_model(self) -> list[int]:
        """The folds (:meth:`present_folds`) whose folder holds a ``model.pt``, ascending."""
        return [k for k in self.present_folds() if self.model_path(k).is_file()]

    # ---- folds.csv -------------------------------------------------------------------------
    def record_folds(self, folds: pd.DataFrame) -> None:
        """Write ``folds.csv``, or check that an existing one holds exactly these folds.

        Args:
            folds: the folds table (:data:`FOLD_COLUMNS`), written without its index.

        Raises:
            UserError: the existing ``folds.csv`` differs, or is damaged (:meth:`read_folds`).
        """
        path = self.path / "folds.csv"
        if not path.exists():
            self.write_text("folds.csv", folds.to_csv(index=False))
        elif not self.read_folds().reset_index(drop=True).equals(folds.reset_index(drop=True)):
            raise UserError(f"{path} holds different folds than this run would use; choose another --out")

    def read_folds(self) -> pd.DataFrame:
        """``folds.csv``, checked to be a folds table: a damaged one is one error line.

        Returns:
            The table, ids as strings.

        Raises:
            UserError: the file cannot be read, is not UTF-8 CSV, or lacks a column of :data:`FOLD_COLUMNS`.
        """
        return read_run_table(self.path / "folds.csv", "a folds table", FOLD_COLUMNS,
                              "restore it, or delete it and the run writes it again from the data",
                              dtype={"image_id": str, "patient_id": str})

    # ---- subgroups.csv -----------------------------------------------------------------------
    def record_subgroups(self, samples: pd.DataFrame) -> None:
        """Write ``subgroups.csv``: each image's subgroup variables, for the report's subgroup AUCs.

        Args:
            samples: the run's sample table; its columns among
                :data:`~ssl_bench.data.subgroups.SUBGROUP_COLUMNS` are written beside
                ``image_id``, as text, blank where unknown.
        """
        columns = [c for c in SUBGROUP_COLUMNS if c in samples.columns]
        table = samples[["image_id", *columns]].fillna("").astype(str)
        self.write_text(SUBGROUPS_FILE, table.to_csv(index=False))

    def read_subgroups(self) -> pd.DataFrame | None:
        """``subgroups.csv``, every column as text (blank: unknown), or ``None`` for a run written
        before runs recorded it.

        Raises:
            UserError: the file cannot be read or has no ``image_id`` column.
        """
        path = self.path / SUBGROUPS_FILE
        if not path.is_file():
            return None
        table = read_run_table(path, "a subgroups table", ("image_id",),
                               "delete it and rerun the run's command (finished folds are kept) to write it again",
                               dtype=str, keep_default_na=False)
        if table["image_id"].duplicated().any():
            raise UserError(f"{path} is damaged (it needs one row per image_id); delete it and rerun the run's "
                            f"command (finished folds are kept) to write it again")
        return table

    # ---- saliency/ ---------------------------------------------------------------------------
    def write_saliency(self, overlays: dict[str, bytes], table: pd.DataFrame) -> None:
        """Replace ``saliency/`` with these overlays and their table (each file atomically; the
        table last, so that it never names a file that is not there).

        Args:
            overlays: file name (inside ``saliency/``) -> PNG bytes.
            table: one row per overlay (:data:`SALIENCY_COLUMNS`; ``file`` is
                ``saliency/<name>``).
        """
        folder = self.path / SALIENCY_DIR
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.png"):
            if old.name not in overlays:
                old.unlink()
        for name, data in overlays.items():
            atomic_write_bytes(folder / name, data)
        atomic_write_text(folder / "saliency.csv", table[list(SALIENCY_COLUMNS)].to_csv(index=False))

    def read_saliency(self) -> pd.DataFrame | None:
        """``saliency/saliency.csv`` with the rows whose overlay exists, or ``None`` when the run has
        none (``ssl-bench explain`` writes it).

        Raises:
            UserError: the table cannot be read or lacks a column of :data:`SALIENCY_COLUMNS`.
        """
        path = self.path / SALIENCY_DIR / "saliency.csv"
        if not path.is_file():
            return None
        table = read_run_table(path, "a saliency table", SALIENCY_COLUMNS,
                               "run ssl-bench explain on the run to write it again",
                               dtype={"image_id": str, "patient_id": str, "file": str})
        return table[[(self.path / f).is_file() for f in table["file"]]].reset_index(drop=True)

    def folds_match(self, image_ids: np.ndarray, fold_of: np.ndarray) -> bool:
        """Whether ``folds.csv`` assigns exactly these images to exactly these folds.

        Args:
            image_ids: the image ids, in the order of ``folds.csv``'s rows.
            fold_of: each image's fold.

        Raises:
            UserError: ``folds.csv`` is missing or damaged (:meth:`read_folds`).
        """
        saved = self.read_folds()
        return len(saved) == len(image_ids) and (saved["image_id"].to_numpy() == image_ids).all() \
            and (saved["fold"].to_numpy() == fold_of).all()

    # ---- config.yaml -------------------------------------------------------------------------
    def read_config(self) -> dict:
        """The run's ``config.yaml`` as a plain dict (fully resolved), of the current schema
        (:func:`ssl_bench.config.migrate`: a run saved before a setting existed reads with the
        value it ran with).

        Raises:
            ConfigError: ``config.yaml`` cannot be read, is no YAML mapping, or is of a later schema.
        """
        return migrate(load_yaml(self.path / "config.yaml"))

    def check_config(self, cfg: Config) -> None:
        """Refuse to mix folds of two different configurations in one run directory.

        Nothing is checked while the run directory has no ``config.yaml`` or no fold folder.

        Args:
            cfg: the config about to run here; compared as :func:`comparable_config` compares.

        Raises:
            UserError: the saved config differs in a setting that decides results (the message names
                the differing top-level keys).
        """
        if not (self.path / "config.yaml").exists() or not self.present_folds():
            return
        as_saved = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))  # tuples become lists, as on disk
        old, new = comparable_config(self.read_config()), comparable_config(as_saved)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise UserError(
                f"{self.path} already holds folds of a different configuration (differs in: "
                f"{', '.join(diff)}); choose another --out or run name (--set name=...)"
            )

    def write_config(self, cfg: Config) -> None:
        """Write ``config.yaml`` (:func:`~ssl_bench.config.save_yaml`).

        Args:
            cfg: the run's fully resolved config.
        """
        save_yaml(cfg, self.path / "config.yaml")

    # ---- other files ---------------------------------------------------------------------
    def read_optional_json(self, name: str) -> dict:
        """``env.json`` or ``summary.json``, or ``{}`` when the file does not exist.

        Args:
            name: the file's name inside the run directory.

        Returns:
            The JSON object as a dict.

        Raises:
            UserError: as :func:`read_json`.
        """
        path = self.path / name
        return read_json(path) if path.is_file() else {}

    def write_json(self, name: str, data: dict) -> None:
        """Write ``data`` as JSON (:func:`to_json`) into the run directory, atomically.

        Args:
            name: the file's name inside the run directory.
            data: the JSON object.
        """
        atomic_write_text(self.path / name, to_json(data))

    def write_text(self, name: str, text: str) -> None:
        """Write ``text`` into the run directory, atomically.

        Args:
            name: the file's name inside the run directory.
            text: the file's content.
        """
        atomic_write_text(self.path / name, text)

    def failure_path(self, k: int) -> Path:
        """Where a bench job's traceback of fold ``k`` goes, ``failed/fold-<k>.txt``.

        Args:
            k: the fold's index (0-based).
        """
        return self.path / "failed" / f"fold-{k}.txt"

    def tracking_target(self, backend: str, uri: str | None, k: int) -> str:
        """Where fold ``k`` streams its training history (``--log``): for ``tensorboard`` the event
        folder, ``<uri>/<run name>/fold-<k>`` or ``<run>/logs/fold-<k>``; for ``mlflow`` the
        tracking URI, ``uri`` or an SQLite store, ``sqlite:///<run>/mlflow.db``.

        Args:
            backend: ``tensorboard`` or ``mlflow`` (any value but ``mlflow`` gets an event folder).
            uri: the ``log.uri`` setting, or None.
            k: the fold's index (0-based).

        Returns:
            The event folder or the tracking URI, as a string.
        """
        if backend == "mlflow":
            return uri or f"sqlite:///{(self.path.resolve() / MLFLOW_STORE).as_posix()}"
        parent = Path(uri).expanduser() / self.path.name if uri else self.path / LOGS_DIR
        return str(parent / f"fold-{k}")

    def remove_leftovers(self) -> list[Path]:
        """Delete what an interrupted process left half-written, and the checkpoints of complete
        folds; returns the paths removed. The checkpoint of an unfinished fold stays: it is what
        that fold resumes from.

        Removed: temporary fold folders and checkpoint files in ``folds/``, and temporary files of the
        run directory's own files in it and in ``failed/``.

        Returns:
            The paths removed.
        """
        removed = []
        folds = self.path / "folds"
        for p in folds.iterdir() if folds.is_dir() else ():
            checkpoint = _CHECKPOINT.match(p.name)
            if _TEMP_FOLD.match(p.name) or _TEMP_CHECKPOINT.match(p.name) \
                    or (checkpoint and self.fold_done(int(checkpoint.group(1)))):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        for d in (self.path, self.path / "failed"):
            for p in d.iterdir() if d.is_dir() else ():
                if p.is_file() and _TEMP_FILE.match(p.name):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

