"""The training progress explains its short loss names once per run (issue 15, case 9: ``ct`` and
``pretext`` in the bars meant nothing to a newcomer), from what each transfer declares."""
from __future__ import annotations

import io

from click.testing import CliRunner
from rich.console import Console

from ssl_bench.cli import main
from ssl_bench.training.progress import TrainingProgress
from ssl_bench.transfer.base import TransferStrategy
from ssl_bench.transfer.collaborative import CollaborativeTransfer


def legend_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("losses: ")]


def test_each_loss_name_is_explained_once_per_run():
    out = io.StringIO()
    progress = TrainingProgress(Console(file=out, width=300), enabled=True)
    with progress:
        progress.start_folds("TSBN-U folds", 2)
        for _fold in range(2):
            progress.explain_losses(CollaborativeTransfer.losses)
            progress.start_stage("collab", 2, 1)
            for _epoch in range(2):
                progress.step()
                progress.epoch_done({"pretext": 0.1, "ct": 250.0, "bce": 0.7, "unexplained": 1.0})
            progress.finish_stage()
            progress.fold_done()
    (line,) = legend_lines(out.getvalue())
    assert line == "losses: " + "; ".join(f"{k} = {CollaborativeTransfer.losses[k]}" for k in ("pretext", "ct", "bce"))
    assert "TSBN eq. 2" in CollaborativeTransfer.losses["ct"] and "TSBN eq. 3" in TransferStrategy.losses["bce"]


def test_a_new_name_later_in_the_run_gets_its_own_line_and_quiet_prints_none():
    out = io.StringIO()
    with TrainingProgress(Console(file=out, width=300), enabled=True) as progress:
        progress.explain_losses(CollaborativeTransfer.losses)
        progress.start_stage("finetune", 1, 1)
        progress.epoch_done({"bce": 0.7})
        progress.start_stage("collab", 1, 1)
        progress.epoch_done({"ct": 250.0, "bce": 0.7})
    assert [line.split(" = ")[0] for line in legend_lines(out.getvalue())] == ["losses: bce", "losses: ct"]
    quiet = io.StringIO()
    with TrainingProgress(Console(file=quiet, width=300), enabled=False) as progress:
        progress.explain_losses(CollaborativeTransfer.losses)
        progress.epoch_done({"bce": 0.7})
    assert quiet.getvalue() == ""


def test_a_run_prints_the_legend_once(tmp_path):
    args = ["run", "--pretext", "gsim", "--transfer", "finetune", "--profile", "smoke", "--folds", "2",
            "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    lines = legend_lines(result.stderr)
    assert [line.split(" = ")[0] for line in lines] == ["losses: pretext", "losses: bce"]  # stage 1, then 2
