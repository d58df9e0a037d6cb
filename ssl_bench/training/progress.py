"""Rich progress display for training: one bar for the folds, one for the current stage's epochs
and one for the steps of the current epoch, with the last epoch's mean loss. The short loss names
of the bars (``bce``, ``pretext``, ``ct``) are explained in one legend line the first time each
appears in a run, from what the transfer strategy declares (its ``losses``)."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import TaskID

from ..console import progress_bar


class TrainingProgress:
    """Fold / epoch / step bars. ``enabled=False`` (tests, worker processes) prints nothing."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.enabled = enabled
        self._progress = progress_bar(console=console, enabled=enabled)
        self._fold: TaskID | None = None
        self._epoch: TaskID | None = None
        self._step: TaskID | None = None
        self._meanings: dict[str, str] = {}
        self._explained: set[str] = set()

    def __enter__(self) -> "TrainingProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def explain_losses(self, meanings: dict[str, str]) -> None:
        """What the loss names shown from now on mean (a transfer strategy's ``losses``)."""
        self._meanings.update(meanings)

    def start_folds(self, description: str, total: int) -> None:
        # the label column reads rich markup; the description names the user's method
        self._fold = self._progress.add_task(escape(description), total=total, info="")

    def fold_done(self, info: str = "") -> None:
        if self._fold is not None:
            self._progress.update(self._fold, advance=1, info=info)

    def start_stage(self, name: str, epochs: int, steps_per_epoch: int) -> None:
        for task in (self._epoch, self._step):
            if task is not None:
                self._progress.remove_task(task)
        self._epoch = self._progress.add_task(f"  {name} epoch", total=epochs, info="")
        self._step = self._progress.add_task("  step", total=steps_per_epoch, info="")

    def skip_epochs(self, done: int) -> None:
        """Count ``done`` epochs of the current stage as done (a fold resumed from its checkpoint)."""
        if self._epoch is not None:
            self._progress.update(self._epoch, completed=done)

    def note(self, line: str) -> None:
        """Print one line above the bars (also when the bars are off: it is not a bar)."""
        self._progress.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def step(self) -> None:
        if self._step is not None:
            self._progress.update(self._step, advance=1)

    def epoch_done(self, losses: dict[str, float]) -> None:
        self._legend(losses)
        info = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
        if self._epoch is not None:
            self._progress.update(self._epoch, advance=1, info=info)
        if self._step is not None:
            self._progress.reset(self._step)

    def _legend(self, losses: dict[str, float]) -> None:
        """One line explaining the loss names not explained yet in this run (once each)."""
        new = [k for k in losses if k in self._meanings and k not in self._explained]
        if new and self.enabled:
            self._progress.console.print(
                "losses: " + "; ".join(f"{k} = {self._meanings[k]}" for k in new),
                highlight=False, markup=False, soft_wrap=True)
        self._explained.update(new)

    def finish_stage(self) -> None:
        for task in (self._epoch, self._step):
            if task is not None:
                self._progress.remove_task(task)
        self._epoch = self._step = None
