"""A fold killed after a checkpoint and resumed, in memory: the store, the kill and the comparison
with the uninterrupted fold that the resume tests share (tests/test_resume_fold.py,
tests/test_ssl_zoo_cnn.py)."""
from __future__ import annotations

import io

import pandas as pd
import torch


class Killed(Exception):
    """What the test's store raises to stop a fold where a kill would."""


class MemoryStore:
    """A checkpoint store in memory that stops the fold right after its ``kill_at``-th save; the
    state goes through ``torch.save`` and ``torch.load(weights_only=True)``, as on disk."""

    label = "fold 0 (test)"

    def __init__(self, kill_at: int | None = None, blob: bytes | None = None):
        self.kill_at, self.blob, self.saves = kill_at, blob, []

    def load(self) -> dict | None:
        return None if self.blob is None else torch.load(io.BytesIO(self.blob), weights_only=True)

    def save(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.blob = buffer.getvalue()
        self.saves.append((state["stage"], state["epoch"]))
        if len(self.saves) == self.kill_at:
            raise Killed


def losses(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["seconds"])


def assert_same_fold(got, want) -> None:
    pd.testing.assert_frame_equal(got.predictions, want.predictions, check_exact=True)
    assert got.metrics == want.metrics
    pd.testing.assert_frame_equal(losses(got.history), losses(want.history), check_exact=True)
    assert got.model["state_dict"].keys() == want.model["state_dict"].keys()
    for name, tensor in want.model["state_dict"].items():
        assert torch.equal(got.model["state_dict"][name], tensor), name
