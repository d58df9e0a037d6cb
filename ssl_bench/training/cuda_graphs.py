"""CUDA-graph capture of a whole training step (forward, both backward passes, optimizer steps).

At the paper's batch of 4 a ResNet50 / U-Net step is bound by the CPU launching ~2000 kernels,
not by the GPU. Replaying a captured graph launches them all at once. :class:`GraphedStep`
wraps a step function ``step(x, y) -> {name: loss}`` of :meth:`FitContext.train`:

1. the first ``warmup`` calls run eagerly on a side stream (cuDNN autotuning, optimizer state
   and autocast initialise there, outside the capture) -- these are real training steps;
2. the next call copies its batch into static input tensors, captures ``step`` on those into a
   ``torch.cuda.CUDAGraph`` and replays it (so this batch trains too);
3. every later call with the same batch shape copies the batch in and replays the graph. A batch
   of another shape (the last, smaller batch of an epoch) runs eagerly; the optimizers' state
   and BatchNorm statistics are shared tensors, so eager and replayed steps interleave freely.

What the step must allow (the fast path's rules anyway): no host-device sync (no ``.item()``,
no boolean-mask indexing, no Python branching on tensor values), optimizers created with
``capturable=True`` (:meth:`FitContext.optimizer` does this when graphs are on), autocast with
``cache_enabled=False`` (:meth:`FitContext.autocast`), and the same Python control flow every
call. Random numbers drawn inside the step (a pretext task's corruption) are fine: PyTorch
advances the graph's Philox offset at each replay. The last warm-up step runs with CUDA's sync
debug mode on "warn": a step that syncs (e.g. SimCLR: ``torch.multinomial`` and lightly's NT-Xent
boolean-mask indexing) is never captured; it, and any step whose capture fails, falls back to
eager for good with one warning: results stay correct, only slower. The returned losses are the graph's static outputs, overwritten by the
next replay: read or copy them before the next call (``FitContext.train`` does).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


_SYNC_REPORT = "called a synchronizing CUDA operation"


class GraphedStep:
    """``step`` run through a captured CUDA graph after ``warmup`` eager calls (see module doc)."""

    def __init__(self, step: StepFn, warmup: int = 3, name: str = "step"):
        self.step = step
        self.warmup = max(1, int(warmup))
        self.name = name
        self.calls = 0
        self.warm = 0
        self.replays = 0
        self.eager_calls = 0
        self.failed: str | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._stream: torch.cuda.Stream | None = None
        self._key: tuple | None = None
        self._static_x: torch.Tensor | None = None
        self._static_y: torch.Tensor | None = None
        self._static_out: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _shape_key(x: torch.Tensor, y: torch.Tensor) -> tuple:
        return (tuple(x.shape), x.stride(), x.dtype, tuple(y.shape), y.dtype)

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        key = self._shape_key(x, y)
        if self.failed is not None or (self._key is not None and key != self._key):
            self.eager_calls += 1
            return self.step(x, y)
        if self._graph is not None:
            assert self._static_x is not None and self._static_y is not None and self._static_out is not None
            self._static_x.copy_(x)
            self._static_y.copy_(y)
            self._graph.replay()
            self.replays += 1
            return self._static_out
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=x.device)
            self._key = key
        if self.warm < self.warmup:
            self.warm += 1
            if self.warm < self.warmup:
                return self._side_stream_step(x, y)
            return self._probed_step(x, y)
        return self._capture_and_replay(x, y)

    def _side_stream_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self._stream is not None
        current = torch.cuda.current_stream(x.device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            out = self.step(x, y)
        current.wait_stream(self._stream)
        self.eager_calls += 1
        return out

    def _probed_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The last warm-up step, run with CUDA's sync debug mode on "warn": a step that
        synchronises with the host cannot be captured, so it is never tried (a failed capture
        can leave the RNG's capture state behind); the step itself runs to completion."""
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                out = self._side_stream_step(x, y)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        # the real report is "called a synchronizing CUDA operation"; torch also warns that the
        # debug mode "does not yet detect all synchronizing operations", which is no sync
        syncs = [str(w.message) for w in caught if _SYNC_REPORT in str(w.message)]
        for w in caught:  # pass the others on
            if _SYNC_REPORT not in str(w.message) and "prototype feature" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if syncs:
            self._fallback(RuntimeError(f"the step synchronises with the host {len(syncs)} time(s): {syncs[0]}"),
                           tried=False)
        return out

    def _capture_and_replay(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self._static_x = x.clone()
        self._static_y = y.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self._stream):
                out = self.step(self._static_x, self._static_y)
            if not isinstance(out, dict):
                raise TypeError("a captured step must return a dict of tensors")
        except Exception as exc:  # an op that syncs or is not capturable: stay eager
            self._fallback(exc)
            self.eager_calls += 1
            return self.step(x, y)
        self._graph, self._static_out = graph, out
        self._graph.replay()
        self.replays += 1
        return self._static_out

    def _fallback(self, exc: Exception, tried: bool = True) -> None:
        text = str(exc).strip()
        self.failed = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
        self._graph = self._static_x = self._static_y = self._static_out = None
        if tried:
            try:
                torch.cuda.synchronize()
            except Exception:  # noqa: BLE001 - the eager steps will report a broken device
                pass
        what = "capture of" if tried else "capture skipped for"
        warnings.warn(
            f"CUDA-graph {what} the '{self.name}' step ({self.failed}); training this stage eagerly",
            RuntimeWarning,
            stacklevel=4,
        )

    def stats(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "replays": self.replays,
            "eager_calls": self.eager_calls,
            "captured": self.captured,
            "failed": self.failed,
        }
