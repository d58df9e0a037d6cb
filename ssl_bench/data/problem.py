"""A bad input found while reading a dataset, kept so that one message can list all of them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One bad input: the file (or sheet row) concerned and why it cannot be used."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"
