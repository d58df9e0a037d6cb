"""The one place rich consoles and progress bars are built, so every bar of the toolkit (training,
benchmark grid, image decoding) looks and behaves the same: a label, the bar, done/total, a
free-text ``info`` field, elapsed time and the estimated time left; the spinner line of a slow
step without a bar (:func:`working`); and so that output written to a file or a pipe (a log,
CI, ``tee``) is not cut at rich's default 80 columns."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


#: width of output that does not go to a terminal (rich would use 80 columns and cut tables)
FILE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr): the terminal's width on a terminal, else
    :data:`FILE_WIDTH` columns (``COLUMNS`` in the environment still wins)."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=FILE_WIDTH)
    return console


@contextlib.contextmanager
def working(text: str, console: Console | None = None, enabled: bool = True,
            bars_inside: bool = False) -> Iterator[None]:
    """Say what a slow step without a bar of its own is doing (imports, a dataset made or read
    through its cache), on a terminal only (stderr by default): a spinner and ``text`` while it
    runs, gone when it ends; with ``bars_inside`` (a step that may show a bar, e.g. a dataset
    decoding its files: a spinner and a bar of two consoles would overwrite each other) ``text``
    as one line before it. Nothing in a log or a pipe, nor with ``enabled=False`` (``--quiet``).
    Not inside a progress bar's ``with``."""
    console = (console or make_console(stderr=True)) if enabled else None
    if console is None or not console.is_terminal:
        yield
    elif bars_inside:
        console.print(text, highlight=False, markup=False, soft_wrap=True)
        yield
    else:
        with console.status(Text(text)):  # names and paths in it are text, not rich markup
            yield


class TimeLeftColumn(TimeRemainingColumn):
    """The estimated time left. rich estimates the speed from the steps of its last 30 s only, so
    a bar whose steps come further apart (folds, a bench's jobs: minutes each) never had an
    estimate; there this falls back to the mean time per step since the task started. Steps
    done before it started (a resumed bench's jobs: ``add_task(..., done_before=n)``) do not
    count."""

    def render(self, task: Task) -> Text:
        if task.time_remaining is None and task.total is not None and not task.finished and task.elapsed:
            done = task.completed - task.fields.get("done_before", 0)
            if done > 0:
                minutes, seconds = divmod(int((task.total - task.completed) * task.elapsed / done), 60)
                hours, minutes = divmod(minutes, 60)
                return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")
        return super().render(task)


def progress_bar(
    label: str | ProgressColumn = "{task.description}",
    console: Console | None = None,
    enabled: bool = True,
    transient: bool = False,
    info: bool = True,
    eta_label: bool = False,
) -> Progress:
    """A rich ``Progress`` on ``console`` (stderr by default).

    ``label`` is the first column (a rich markup template or a column); ``info=True`` adds the
    ``{task.fields[info]}`` column, so every task must then be added with ``info=...``;
    ``eta_label`` writes "ETA" before the time left (:class:`TimeLeftColumn`); ``enabled=False``
    prints nothing.
    """
    columns: list[ProgressColumn] = [label if isinstance(label, ProgressColumn) else TextColumn(label),
                                     BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeElapsedColumn())
    if eta_label:
        columns.append(TextColumn("ETA"))
    columns.append(TimeLeftColumn())
    return Progress(*columns, console=console or make_console(stderr=True), transient=transient,
                    disable=not enabled)
