"""The training loop every transfer strategy runs: epochs of a strategy's step function over a
fold's batches, with losses kept on the device and read back once per epoch.

No host-device sync happens inside a step: a step returns detached loss tensors, the loop sums
them on the device, and one copy per epoch brings the means back (no ``.item()``, no Python
branching on tensor values). With CUDA graphs on, the step is captured after a few eager steps
and replayed (:mod:`ssl_bench.training.cuda_graphs`). Every epoch is recorded in
:attr:`TrainingLoop.history` (a run writes it as ``history.csv``). With ``checkpoints``
(``train.checkpoint_every``), the fold's training state is saved every few epochs and a resumed
fold skips the stages and epochs it had done (:mod:`ssl_bench.training.checkpoint`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .batches import FoldBatches
from .checkpoint import FoldCheckpoints
from .cuda_graphs import GraphedStep
from .progress import TrainingProgress
from .tracking import HistorySink

StepFn = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@dataclass
class TrainingLoop:
    """Runs stages (named runs of ``epochs`` epochs of one step function) and reports progress."""

    batches: FoldBatches
    use_graphs: bool = False
    progress: TrainingProgress = field(default_factory=lambda: TrainingProgress(enabled=False))
    #: per stage, how the CUDA-graph wrapper ran its steps (empty when graphs are off)
    graph_stats: dict[str, dict] = field(default_factory=dict)
    #: one row per epoch of every stage: stage, epoch, each mean loss, learning rate, seconds
    history: list[dict] = field(default_factory=list)
    #: the learning rate to record (the optimisers' own, read when an epoch ends)
    learning_rate: Callable[[], float] = lambda: float("nan")
    #: called with (epoch, epochs) before each epoch of a stage: sets the learning-rate schedule
    start_epoch: Callable[[int, int], None] = lambda epoch, epochs: None
    #: saves the training state every few epochs and restores it on resume (None: off)
    checkpoints: FoldCheckpoints | None = None
    #: how many stages ``run`` has started: a stage's index in the fold, for the checkpoints
    stages_started: int = 0
    #: receives each history row as it is added (--log tensorboard|mlflow; training/tracking.py)
    sink: HistorySink | None = None

    def run(self, stage: str, epochs: int, step: StepFn,
            after_epoch: Callable[[int], dict[str, float]] | None = None) -> dict[str, float]:
        """Run ``epochs`` epochs of ``step(x, y) -> {loss name: detached loss}``; returns the last
        epoch's mean losses. A loss that becomes NaN or infinite stops training with the stage
        and loss named. ``after_epoch(epoch)`` (1-based), when given, returns more columns for
        the epoch's history row (the online probes), recorded before it is logged and saved."""
        index, self.stages_started = self.stages_started, self.stages_started + 1
        first = self.checkpoints.resume_at(index, stage, epochs, self.history) \
            if self.checkpoints is not None else 0
        if first is None:  # finished before the checkpoint being resumed
            assert self.checkpoints is not None and self.checkpoints.saved is not None
            return stage_losses(self.checkpoints.saved["history"], stage)
        if first and self.sink is not None:  # resumed: the tracker gets the restored epochs too, so
            for row in self.history:         # it holds the whole history (its folder starts empty)
                self.sink.log_epoch(row)
        if self.use_graphs:
            step = GraphedStep(step, name=stage)
        last: dict[str, float] = stage_losses(self.history, stage) if first else {}
        self.progress.start_stage(stage, epochs, self.batches.steps_per_epoch())
        if first:
            self.progress.skip_epochs(first)
        for epoch in range(first, epochs):
            started = time.perf_counter()
            self.start_epoch(epoch, epochs)
            sums: dict[str, torch.Tensor] = {}
            count = 0
            for x, y in self.batches.epoch():
                losses = step(x, y)
                for k, v in losses.items():
                    v = v.detach().float()
                    # a copy to start from: a graph's outputs are overwritten by the next replay
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                self.progress.step()
            if count:
                stacked = torch.stack(list(sums.values())).cpu() / count  # the epoch's one sync
                last = dict(zip(sums, stacked.tolist()))
                for k, mean in last.items():
                    if not math.isfinite(mean):
                        raise FloatingPointError(f"{stage}: loss {k} became {mean}; lower train.lr")
            extra = after_epoch(epoch + 1) if after_epoch is not None else {}
            self.history.append({"stage": stage, "epoch": epoch + 1, **last, "lr": self.learning_rate(),
                                 "seconds": round(time.perf_counter() - started, 4), **extra})
            if self.sink is not None:
                self.sink.log_epoch(self.history[-1])
            self.progress.epoch_done(last)
            if self.checkpoints is not None:
                self.checkpoints.epoch_done(index, stage, epoch + 1, self.history)
        self.progress.finish_stage()
        if isinstance(step, GraphedStep):
            self.graph_stats[stage] = step.stats()
        return last


def stage_losses(history: list[dict], stage: str) -> dict[str, float]:
    """The mean losses of the last recorded epoch of ``stage`` ({} when none is recorded)."""
    rows = [row for row in history if row["stage"] == stage]
    return {k: v for k, v in rows[-1].items() if k not in ("stage", "epoch", "lr", "seconds")} if rows else {}
