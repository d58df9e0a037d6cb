"""Streaming the training history to an experiment tracker (``--log tensorboard|mlflow``).

Every row the training loop adds to a fold's history (``history.csv``: ``stage``, ``epoch``, each
mean loss, ``lr``, ``seconds``) also goes, the moment the epoch ends, to the fold's
:class:`HistorySink`: one scalar per value, named ``<stage>/<value>`` (``finetune/bce``,
``pretext/lr``), at step = the epoch within its stage, so a tracker's curves are the history
file's columns.

- ``tensorboard``: :class:`torch.utils.tensorboard.SummaryWriter` event files in one folder per
  fold (``tensorboard --logdir <run>/logs``). The folder names the run directory that writes it
  (:data:`OWNER_FILE`): a fold trained again (it never completed) removes its own earlier
  attempt's event files, so an interrupted attempt is not drawn twice, and never another run's
  (:func:`event_folder`).
- ``mlflow``: one MLflow run per fold (run name ``fold-<k>``) in the experiment named after the run
  directory, the resolved config as its parameters; by default in an SQLite store inside the run
  directory (``mlflow ui --backend-store-uri sqlite:///<run>/mlflow.db``; MLflow 3 no longer
  writes its old file store), or any tracking URI (``--log-uri http://server:5000``).

Both libraries are optional extras (``pip install "ssl-bench[tensorboard]"`` or
``"ssl-bench[mlflow]"``); :func:`require_backend` checks the one asked for before any training.
A tracker that cannot be opened is one error line before the fold trains; one that fails later (a
server gone) is one warning and the fold trains on: history.csv is the record, the tracker a view.
"""
from __future__ import annotations

import hashlib
import importlib
import itertools
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Protocol

from ..errors import ConfigError, ToolkitWarning, UserError, exception_line
from ..fileio import OutOfSpace, atomic_write_text

#: the module each backend needs, and the distribution that provides it
BACKEND_MODULES = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


class HistorySink(Protocol):
    """Receives a fold's history rows as they are produced."""

    def log_epoch(self, row: dict[str, Any]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def require_backend(backend: str) -> ModuleType | None:
    """The module behind ``backend`` (None for ``none``); a missing library is one line naming
    the extra to install."""
    if backend == "none":
        return None
    module, package = BACKEND_MODULES[backend]
    try:
        return importlib.import_module(module)  # an optional dependency: imported only when asked for
    except ImportError:
        raise ConfigError(f"--log {backend} needs the {package} package: "
                          f"pip install \"ssl-bench[{backend}]\"") from None


def scalars(row: dict[str, Any]) -> Iterator[tuple[str, int, float]]:
    """``(name, step, value)`` of each value of a history row: ``<stage>/<column>`` at its epoch
    (a loss that a stage does not have is not in its rows)."""
    stage, epoch = str(row["stage"]), int(row["epoch"])
    for key, value in row.items():
        if key not in ("stage", "epoch"):
            yield f"{stage}/{key}", epoch, float(value)


#: in a fold's TensorBoard folder: the run directory that writes it (its resolved path)
OWNER_FILE = ".ssl-bench-run"


def _owner_of(folder: Path) -> str | None:
    try:
        return (folder / OWNER_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def event_folder(log_dir: str | Path, owner: str) -> Path:
    """The folder of a fold's TensorBoard events, for the run directory ``owner``: ``log_dir``,
    unless another run directory's files are there, then ``<log_dir>-<digest of owner>``.

    Why: with ``--log-uri`` the event folder is ``<uri>/<run name>/fold-<k>``, the same for two
    run directories of one name under different ``--out`` (two projects, a rerun elsewhere), so
    the folder alone does not say whose events it holds; the owner file does. Only our own event
    files are removed, those of an earlier attempt at this fold (a fold trains again only when it
    never completed: its old curves would be drawn over the new ones, at the same steps; a fold
    resumed from its checkpoint sends the restored epochs again, training/loop.py, so the folder
    ends up holding exactly history.csv). Another run's files, or files an older ssl-bench wrote
    without an owner file, are kept, and this fold writes beside them, in a folder named after
    the run directory, so the same run directory finds it again and TensorBoard shows both."""
    base = Path(log_dir)
    tag = hashlib.sha256(owner.encode("utf-8")).hexdigest()[:8]
    for n in itertools.count():
        folder = base if n == 0 else base.with_name(f"{base.name}-{tag}" + (f"-{n}" if n > 1 else ""))
        if _owner_of(folder) == owner:
            for events in folder.glob("events.out.tfevents.*"):  # what SummaryWriter writes
                events.unlink(missing_ok=True)
            break
        if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
            atomic_write_text(folder / OWNER_FILE, f"{owner}\n")
            break
    if folder != base:
        warnings.warn(f"{base} holds another run directory's TensorBoard files (kept); this fold logs to "
                      f"{folder}", ToolkitWarning, stacklevel=2)
    return folder


class TensorBoardSink:
    """One fold's history as TensorBoard scalars in ``log_dir`` (:func:`event_folder`: the events
    of an earlier attempt by the run directory ``owner`` removed, another's kept)."""

    def __init__(self, log_dir: str | Path, owner: str):
        tensorboard = require_backend("tensorboard")
        assert tensorboard is not None
        self.log_dir = event_folder(log_dir, owner)
        self.writer = tensorboard.SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, row: dict[str, Any]) -> None:
        for name, step, value in scalars(row):
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # visible in a running TensorBoard as each epoch ends

    def close(self, failed: bool = False) -> None:
        self.writer.close()


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: dotted keys, values as text."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


class MlflowSink:
    """One fold's history as the metrics of one MLflow run (``run_name``) in ``experiment``."""

    def __init__(self, uri: str, experiment: str, run_name: str, config: dict[str, Any]):
        mlflow = require_backend("mlflow")
        assert mlflow is not None
        self.entities = importlib.import_module("mlflow.entities")
        errors = importlib.import_module("mlflow.exceptions")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment)
            except errors.MlflowException:  # a concurrent job of the bench created it first
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [self.entities.Param(k, v) for k, v in flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log_epoch(self, row: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(name, value, now, step) for name, step, value in scalars(row)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")



class KeepTraining:
    """Wraps a sink so that its failures during training warn once and end the logging, never the
    training."""

    def __init__(self, sink: HistorySink, where: str):
        self.sink, self.where, self.failed = sink, where, False

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.failed:
            return
        try:
            getattr(self.sink, method)(*args, **kwargs)
        except Exception as exc:  # any tracker failure: the history still goes to history.csv
            self.failed = True
            warnings.warn(f"logging to {self.where} stopped ({exception_line(exc, limit=300)}); training goes on and "
                          f"history.csv keeps every epoch", ToolkitWarning, stacklevel=2)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._call("log_epoch", row)

    def close(self, failed: bool = False) -> None:
        self._call("close", failed)


def open_sink(backend: str, target: str, run_name: str, fold: int, config: dict[str, Any],
              owner: str) -> HistorySink | None:
    """The sink of one fold: ``target`` is TensorBoard's event folder or MLflow's tracking URI
    (:meth:`ssl_bench.experiment.rundir.RunDir.tracking_target`), ``owner`` the run directory
    writing (its resolved path); None for ``none``. A tracker that cannot be opened is one
    :class:`~ssl_bench.errors.UserError` line."""
    if backend == "none":
        return None
    try:
        if backend == "tensorboard":
            sink: HistorySink = TensorBoardSink(target, owner)
        elif backend == "mlflow":
            sink = MlflowSink(target, run_name, f"fold-{fold}", config)
        else:
            raise ConfigError(f"unknown log backend '{backend}'")
    except (UserError, OutOfSpace):
        raise
    except Exception as exc:  # an unreachable server, an unwritable folder, a bad URI
        raise UserError(f"--log {backend}: cannot open {target} ({exception_line(exc, limit=300)})") from None
    return KeepTraining(sink, f"{backend} ({target})")
