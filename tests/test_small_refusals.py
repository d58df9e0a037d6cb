"""Small things that were silently wrong or spoke of the wrong thing (issue 25, item 12): a negative
``data.workers`` is refused in one line (0 stays one decoding process per CPU core); an error
about the root of a test dataset or a pretext pool names the option the user gives for it, not
``--data-root``; a library's warning (scikit-learn, Pillow, torch) is one ``warning:`` line, as
the toolkit's own are, never silenced."""
from __future__ import annotations

import io
import warnings

import pytest
from click.testing import CliRunner
from PIL import Image
from rich.console import Console
from sklearn.exceptions import ConvergenceWarning, UndefinedMetricWarning

from ssl_bench.cli import main
from ssl_bench.cli.list_cmd import show_toolkit_warnings
from ssl_bench.config import ConfigError, build_config
from ssl_bench.errors import DataWarning


# ------------------------------------------------------------------------------ data.workers


def test_negative_decoding_workers_are_refused():
    with pytest.raises(ConfigError, match=r"data\.workers must be at least 0 \(0: one decoding process per CPU "
                                          r"core\), got -1"):
        build_config("smoke", sets=["data.workers=-1"])
    assert build_config("smoke", sets=["data.workers=0"]).data.workers == 0  # one per CPU core


@pytest.mark.parametrize("command", [
    ["run", "--profile", "smoke", "--set", "data.workers=-1"],
    ["data", "prepare", "--workers", "-1"],
    ["data", "verify", "--workers", "-1"],
])
def test_negative_decoding_workers_are_one_line(tmp_path, command):
    result = CliRunner().invoke(main, [*command, *(["--out", str(tmp_path / "runs")] if command[0] == "run" else
                                                   ["--cache-dir", str(tmp_path / "cache")])])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: data.workers must be at least 0 (0: one decoding process per CPU core), got -1"]


# ------------------------------------------------------------------------------ roots


@pytest.mark.parametrize("args, message", [
    (["--pretext", "simclr", "--transfer", "linear", "--pretext-data", "folder"],
     "error: dataset 'folder' needs --pretext-data-root PATH"),
    (["--pretext", "simclr", "--transfer", "linear", "--pretext-data", "folder", "--pretext-data-root", "{missing}"],
     "error: --pretext-data-root {missing} is not a folder"),
    (["--pretext", "none", "--transfer", "knn", "--test-dataset", "inbreast"],
     "error: dataset 'inbreast' needs --test-data-root PATH"),
    (["--pretext", "none", "--transfer", "knn", "--test-dataset", "inbreast", "--test-data-root", "{missing}"],
     "error: --test-data-root {missing} is not a folder"),
    (["--pretext", "simclr", "--transfer", "linear", "--pretext-data", "manifest"],
     "error: dataset 'manifest' needs --pretext-data-root PATH (or an absolute params.manifest.csv)"),
])
def test_root_errors_name_the_option_given_for_that_dataset(tmp_path, args, message):
    missing = str(tmp_path / "nowhere")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--folds", "2", "--out", str(tmp_path / "runs"),
                                       "--quiet", *(a.format(missing=missing) for a in args)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [message.format(missing=missing)]


# ------------------------------------------------------------------------------ warnings


def _shown(*warns) -> list[str]:
    """The lines :func:`show_toolkit_warnings` prints for warnings raised inside it."""
    buffer = io.StringIO()
    with show_toolkit_warnings(Console(file=buffer, width=80)):
        warnings.simplefilter("always")
        for warn in warns:
            warn()
    return buffer.getvalue().splitlines()


def test_library_warnings_are_one_line_each():
    lines = _shown(
        lambda: warnings.warn(ConvergenceWarning("lbfgs failed to converge after 1 iteration(s):\n"
                                                 "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT\n\nIncrease max_iter."),
                              stacklevel=1),
        lambda: warnings.warn("Recall is ill-defined and being set to 0.0", UndefinedMetricWarning, stacklevel=1),
        lambda: warnings.warn("Image size (144000000 pixels) exceeds limit of 89478485 pixels",
                              Image.DecompressionBombWarning, stacklevel=1),
        lambda: warnings.warn_explicit("The given NumPy array is not writable", UserWarning,
                                       "/venv/lib/python3.11/site-packages/torch/utils/data/_utils.py", 7),
        lambda: warnings.warn("2 images are blank: a.png, b.png", DataWarning, stacklevel=1),
    )
    assert lines == [
        "warning: lbfgs failed to converge after 1 iteration(s): STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT "
        "Increase max_iter. (ConvergenceWarning from sklearn)",
        "warning: Recall is ill-defined and being set to 0.0 (UndefinedMetricWarning from sklearn)",
        "warning: Image size (144000000 pixels) exceeds limit of 89478485 pixels (DecompressionBombWarning from PIL)",
        "warning: The given NumPy array is not writable (UserWarning from torch)",
        "warning: 2 images are blank: a.png, b.png",
    ]


def test_a_runs_convergence_warning_is_one_line(tmp_path):
    """A linear probe that cannot converge in one iteration: scikit-learn's ConvergenceWarning of
    nine lines was printed as Python's file:line format; now it is one line per fold's fit."""
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--folds", "2", "--pretext", "none",
                                       "--transfer", "linear", "--set", "params.linear.max_iter=1",
                                       "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    shown = [line for line in result.stderr.splitlines() if "ConvergenceWarning" in line]
    assert shown and all(line.startswith("warning: lbfgs failed to converge") and
                         line.endswith("(ConvergenceWarning from sklearn)") for line in shown)
    assert "_logistic.py" not in result.stderr and "STOP: TOTAL NO. OF ITERATIONS" in shown[0]
