"""The checksum of a saved state by value: what a fold checkpoint, a pretext-stage cache entry and
a ``model.pt`` store beside the tensors they hold, and check when they are read back.

torch's file format has no checksum of its own: a flipped byte in a tensor's data loads without a
word (a fold resumed from such a checkpoint went on training other weights). The digest is taken
over the values, not over the file's bytes, so that it is written in the same file as the state
(one file, replaced atomically: there is no moment where a state and its checksum disagree) and
does not depend on how torch lays the file out: a SHA-256 of every tensor's dtype, shape and bytes
and of every plain value, walking dicts, lists and tuples in order.
"""
from __future__ import annotations

import hashlib

import torch


def state_digest(value) -> str:
    """SHA-256 (hex) of ``value``: nested dicts, lists and tuples of tensors and plain values."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h, value) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        h.update(f"D{len(value)}:".encode())
        for key, item in value.items():
            _feed(h, key)
            _feed(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}:".encode())
        for item in value:
            _feed(h, item)
    else:  # int, float, str, bool, None, torch.dtype...: their type and repr say them exactly
        text = f"{type(value).__name__}={value!r};"
        h.update(text.encode("utf-8", "surrogateescape"))
