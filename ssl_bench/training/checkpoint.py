"""Checkpoints inside a fold: every ``train.checkpoint_every`` epochs of each stage, the whole
training state of the fold is saved, and a fold started again with a saved state continues from it
with the same results as a run that was never interrupted (on the CPU, bit for bit:
``tests/test_resume_fold.py``).

The state is everything the rest of the fold's training depends on: the stage reached (its index
among the fold's :meth:`~ssl_bench.training.loop.TrainingLoop.run` calls, and its name) and the
epochs done in it, the ``state_dict`` of every module a strategy passed to ``FitContext.prepare``
(buffers included, also those ``state_dict`` leaves out: BatchNorm statistics, a momentum teacher
and its step count) and of every
optimiser of ``FitContext.optimizer``, the pretext task's own modules (a MoCo queue, a SimCLR
memory bank, DINO's centre), the history rows so far, and the random states of torch (CPU and
CUDA: batch order and augmentation draw from the global generators), numpy and Python. Every value
is a tensor or a plain value, so the file is read with ``torch.load(weights_only=True)``. The
learning-rate schedule (``train.schedule``) needs no state of its own: the loop sets each epoch's
rate from the epoch number, resumed or not. There is no GradScaler (bf16 needs none).

A strategy's ``fit`` runs again from its start on resume: it builds the same networks and
optimisers in the same order, the loop skips the stages the checkpoint had finished and, on
reaching the checkpoint's stage, overwrites everything built so far with the saved state (so what
``fit`` drew from the random generators before that point does not matter) and runs the remaining
epochs. Where the file lives and whether it belongs to this run's configuration is the run
directory's business (:class:`CheckpointStore`: the file is named by :mod:`ssl_bench.experiment.rundir`,
its format is :mod:`ssl_bench.experiment.fold_checkpoint`'s).
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Callable, Protocol, cast

import numpy as np
import torch
from torch import nn

from ..errors import ToolkitWarning, UserError


class CheckpointStore(Protocol):
    """Where a fold's training state is kept (the run directory's ``folds/.<k>.checkpoint.pt``)."""

    #: what messages call it, e.g. ``fold 0 (checkpoint runs/x/folds/.0.checkpoint.pt)``
    label: str

    def load(self) -> dict | None:
        """The saved state, or None when there is none for this fold and configuration."""

    def save(self, state: dict) -> None:
        """Replace the saved state atomically."""

    def discard(self) -> None:
        """Delete the saved state (one that cannot be restored)."""


#: what a saved state holds (:meth:`FoldCheckpoints.epoch_done`), with the type of each entry
STATE_ENTRIES = {"stage_index": int, "stage": str, "epoch": int, "history": list, "modules": list,
                 "optimizers": list, "pretext": dict, "rng": dict}
#: the random states of numpy and Python in it (:func:`rng_state`; besides the torch generator's tensor)
RNG_ENTRIES = {"numpy": ("kind", "keys", "pos", "has_gauss", "gauss"), "python": ("version", "internal", "gauss_next")}


def state_problem(state) -> str | None:
    """What makes ``state`` unusable as a saved training state (a missing or mistyped entry), in
    words (``"lacks modules, rng"``), or None when it has every entry :meth:`FoldCheckpoints._restore`
    reads. Checked when the checkpoint is read, before any stage is skipped, so that such a file is
    dropped and its fold trains from the start rather than failing on every rerun."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__} instead of a training state"
    missing = [k for k in STATE_ENTRIES if k not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    wrong = [k for k, kind in STATE_ENTRIES.items()
             if not isinstance(state[k], kind) or (kind is int and isinstance(state[k], bool))]
    if wrong:
        return f"holds a wrong {', '.join(wrong)}"
    modules = [*state["modules"], *state["pretext"].values()]
    if not all(isinstance(m, dict) and isinstance(m.get("state_dict"), dict) and isinstance(m.get("buffers"), dict)
               for m in modules):
        return "holds a module without its state_dict and buffers"
    if not all(isinstance(o, dict) and "state" in o and "param_groups" in o for o in state["optimizers"]):
        return "holds an optimiser without its state and param_groups"
    if not all(isinstance(row, dict) for row in state["history"]):
        return "holds a history that is not a list of rows"
    rng = state["rng"]
    lacking = ["rng.torch"] if not isinstance(rng.get("torch"), torch.Tensor) else []
    lacking += [f"rng.{k}" for k, keys in RNG_ENTRIES.items()
                if not (isinstance(rng.get(k), dict) and all(x in rng[k] for x in keys))]
    if lacking:
        return f"lacks {', '.join(lacking)}"
    return None


def rng_state(device: torch.device) -> dict:
    """The random states of torch (CPU, and CUDA on a CUDA device), numpy and Python, as tensors
    and plain values."""
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))


def module_state(module: nn.Module) -> dict:
    """``module``'s ``state_dict`` and its non-persistent buffers, which ``state_dict`` leaves out
    but training may change (lightly keeps a MoCo queue and its pointer in such buffers)."""
    state = module.state_dict()
    extra = {name: b for name, b in module.named_buffers() if name not in state}
    return {"state_dict": state, "buffers": extra}


@torch.no_grad()
def load_module_state(module: nn.Module, state: dict) -> None:
    module.load_state_dict(state["state_dict"])
    for name, value in state["buffers"].items():
        module.get_buffer(name).copy_(value)


@torch.no_grad()
def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping the optimiser's own tensors where a
    hyperparameter is one (a learning rate that a captured CUDA graph reads and the schedule
    fills): the saved value is copied into them."""
    own = [{k: v for k, v in group.items() if isinstance(v, torch.Tensor)} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, tensors in zip(optimizer.param_groups, own):
        for key, tensor in tensors.items():
            tensor.copy_(torch.as_tensor(group[key]))
            group[key] = tensor


@dataclass
class FoldCheckpoints:
    """Saves a fold's training state every ``every`` epochs and restores it (module docstring).

    ``modules`` and ``optimizers`` are the live lists the strategy's builders fill as ``fit`` runs;
    ``pretext_modules`` are the pretext task's stateful parts. ``announce`` gets the one line
    saying where training resumed."""

    every: int
    store: CheckpointStore
    modules: list[nn.Module]
    optimizers: list[torch.optim.Optimizer]
    pretext_modules: dict[str, nn.Module]
    device: torch.device
    announce: Callable[[str], None] = lambda line: None
    #: the state to resume from, read once from the store; None once restored (or without one)
    saved: dict | None = field(init=False)

    def __post_init__(self) -> None:
        saved = self.store.load()
        problem = None if saved is None else state_problem(saved)
        if problem:  # of this fold and configuration, but damaged: it would fail on every rerun
            self.store.discard()
            warnings.warn(f"{self.store.label} {problem}: deleted, the fold trains from the start",
                          ToolkitWarning, stacklevel=2)
            saved = None
        self.saved = saved

    def resume_at(self, index: int, stage: str, epochs: int, history: list[dict]) -> int | None:
        """Where stage ``index`` (named ``stage``) starts: 0 without a state to resume; None for a
        stage the saved state had finished (skip it); for the saved state's own stage, its epoch,
        after restoring the whole state (``history`` is replaced by the saved rows)."""
        if self.saved is None:
            return 0
        if index < self.saved["stage_index"]:
            return None
        if self.saved["stage"] != stage:
            raise UserError(f"{self.store.label}: saved in stage '{self.saved['stage']}' where this "
                            f"code trains '{stage}'; delete the checkpoint to train the fold from the start")
        saved, self.saved = self.saved, None
        self._restore(saved, history)
        self.announce(f"resumed {self.store.label} at stage '{stage}' after epoch {saved['epoch']} of {epochs}")
        return int(saved["epoch"])

    def epoch_done(self, index: int, stage: str, epoch: int, history: list[dict]) -> None:
        """After ``epoch`` (1-based) of stage ``index``: save the state every ``every`` epochs."""
        if epoch % self.every:
            return
        self.store.save({
            "stage_index": index,
            "stage": stage,
            "epoch": epoch,
            "history": [dict(row) for row in history],
            "modules": [module_state(m) for m in self.modules],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "pretext": {name: module_state(m) for name, m in self.pretext_modules.items()},
            "rng": rng_state(self.device),
        })

    def _restore(self, saved: dict, history: list[dict]) -> None:
        counts = (len(saved["modules"]), len(saved["optimizers"]), sorted(saved["pretext"]))
        if counts != (len(self.modules), len(self.optimizers), sorted(self.pretext_modules)):
            raise UserError(f"{self.store.label}: holds other networks or optimisers than this code "
                            f"builds; delete the checkpoint to train the fold from the start")
        for module, state in zip(self.modules, saved["modules"]):
            load_module_state(module, state)
        for optimizer, state in zip(self.optimizers, saved["optimizers"]):
            load_optimizer_state(optimizer, state)
        for name, state in saved["pretext"].items():
            load_module_state(self.pretext_modules[name], state)
        history[:] = [dict(row) for row in saved["history"]]
        set_rng_state(saved["rng"])
