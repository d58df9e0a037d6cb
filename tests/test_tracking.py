"""``--log tensorboard|mlflow``: every value of each fold's history.csv streams to the tracker (read
back with TensorBoard's EventAccumulator and MLflow's client), a missing library is one line
before anything is written, and logging is no part of what a run directory's folds must share.
Each backend's test runs only where its optional library is installed."""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import LOG_BACKENDS, build_config
from ssl_bench.errors import ConfigError
from ssl_bench.training.tracking import BACKEND_MODULES

# gsim + finetune: two stages (pretext, then finetune) with different losses
RUN = ["run", "--pretext", "gsim", "--transfer", "finetune", "--profile", "smoke", "--folds", "2", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def expected_scalars(history: pd.DataFrame) -> dict[tuple[str, int], float]:
    """``(stage/column, epoch) -> value`` of every value in history.csv (a stage's missing loss,
    NaN in the file, is not a value)."""
    out = {}
    for row in history.to_dict(orient="records"):
        for column, value in row.items():
            if column not in ("stage", "epoch") and not (isinstance(value, float) and math.isnan(value)):
                out[(f"{row['stage']}/{column}", int(row["epoch"]))] = float(value)
    return out


def test_backends_of_the_config_are_the_trackers():
    assert set(LOG_BACKENDS) == {"none", *BACKEND_MODULES}
    with pytest.raises(ConfigError, match="log.backend must be one of none, tensorboard, mlflow, got 'wandb'"):
        build_config("smoke", sets=["log.backend=wandb"])


def test_tensorboard_events_equal_history_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = invoke(*RUN, "--fold", "0", "--log", "tensorboard", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run = tmp_path / "gsim-finetune"
    history = pd.read_csv(run / "folds" / "0" / "history.csv")
    assert set(history["stage"]) == {"pretext", "finetune"}
    events = EventAccumulator(str(run / "logs" / "fold-0"))
    events.Reload()
    logged = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    expected = expected_scalars(history)
    assert set(logged) == set(expected)  # nothing missing, nothing else
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key  # stored as float32
    # logging is not part of the configuration the folds share: fold 1 without it joins the run
    again = invoke(*RUN, "--fold", "1", "--out", tmp_path)
    assert again.exit_code == 0, again.output
    assert (run / "folds" / "1" / "history.csv").is_file() and not (run / "logs" / "fold-1").exists()


def test_mlflow_metrics_equal_history_csv(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    result = invoke(*RUN, "--fold", "1", "--log", "mlflow", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run = tmp_path / "gsim-finetune"
    history = pd.read_csv(run / "folds" / "1" / "history.csv")
    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("gsim-finetune")
    (logged_run,) = client.search_runs([experiment.experiment_id])
    assert logged_run.info.run_name == "fold-1" and logged_run.info.status == "FINISHED"
    assert logged_run.data.params["train.epochs"] == "2" and logged_run.data.params["pretext"] == "gsim"
    expected = expected_scalars(history)
    logged = {(key, m.step): m.value for key in logged_run.data.metrics
              for m in client.get_metric_history(logged_run.info.run_id, key)}
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-12), key


BENCH = ["bench", Path(__file__).resolve().parents[1] / "benchmarks" / "table2.yaml", "--profile", "smoke", "--explain", "0",
         "--only", "ResNet", "--quiet"]


@pytest.mark.parametrize("command", [RUN, BENCH], ids=["run", "bench"])
@pytest.mark.parametrize("backend", ["tensorboard", "mlflow"])
def test_a_missing_library_is_one_line_before_anything_is_written(tmp_path, monkeypatch, backend, command):
    module = BACKEND_MODULES[backend][0]
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were absent
    result = invoke(*command, "--log", backend, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    package = BACKEND_MODULES[backend][1]
    error = f"error: --log {backend} needs the {package} package: pip install \"ssl-bench[{backend}]\""
    assert result.output.strip().splitlines()[-1] == error and "Traceback" not in result.output
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # checked before the run directory


def event_scalars(folder: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tensorboard_never_deletes_the_events_of_another_run_directory(tmp_path):
    """Two projects (two --out) log a run of the same name to one --log-uri: the first's event
    files survive the second, whose own events (all of its history.csv) go beside them; rerunning
    the first's fold replaces only the first's events."""
    pytest.importorskip("tensorboard")
    uri = tmp_path / "tb"
    first = invoke(*RUN, "--fold", "0", "--log", "tensorboard", "--log-uri", uri, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    logs = uri / "gsim-finetune"
    first_files = files_of(logs)
    first_history = pd.read_csv(tmp_path / "a" / "gsim-finetune" / "folds" / "0" / "history.csv")
    assert event_scalars(logs / "fold-0").keys() == expected_scalars(first_history).keys()

    second = invoke(*RUN, "--fold", "0", "--log", "tensorboard", "--log-uri", uri, "--out", tmp_path / "b")
    assert second.exit_code == 0, second.output
    after = files_of(logs)
    assert {name: after.get(name) for name in first_files} == first_files  # nothing of the first lost
    (elsewhere,) = {(logs / name).parent for name in set(after) - set(first_files)}
    assert elsewhere.parent == logs and elsewhere.name.startswith("fold-0")
    assert "warning:" in second.output and str(elsewhere) in " ".join(second.output.split())
    second_history = pd.read_csv(tmp_path / "b" / "gsim-finetune" / "folds" / "0" / "history.csv")
    assert event_scalars(elsewhere).keys() == expected_scalars(second_history).keys()

    # the first project trains its fold 0 again (as after an interrupted attempt): its own old
    # events go, so the folder holds this attempt's curves once; the second's are untouched
    shutil.rmtree(tmp_path / "a" / "gsim-finetune" / "folds" / "0")
    again = invoke(*RUN, "--fold", "0", "--log", "tensorboard", "--log-uri", uri, "--out", tmp_path / "a")
    assert again.exit_code == 0, again.output
    assert files_of(elsewhere) == {name[len(elsewhere.name) + 1:]: data for name, data in after.items()
                                   if name.startswith(f"{elsewhere.name}/")}
    assert len(list((logs / "fold-0").glob("events.out.tfevents.*"))) == 1
    again_history = pd.read_csv(tmp_path / "a" / "gsim-finetune" / "folds" / "0" / "history.csv")
    logged = event_scalars(logs / "fold-0")
    assert logged.keys() == expected_scalars(again_history).keys()
