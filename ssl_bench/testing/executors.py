"""The contract of an executor (:class:`ssl_bench.bench.executors.base.Executor`)."""
from __future__ import annotations

from typing import Any

from ..bench.executors.base import Executor
from ..components import options as component_options
from ..registry import EXECUTORS
from .common import build_component, check_common, expect


def check_executor(name_or_cls: Any, **options: Any):
    """Check an executor (:class:`ssl_bench.bench.executors.base.Executor`); returns it.

    Registered, documented, options with defaults (``retries`` among them), an ``Executor``
    subclass that builds with its defaults and whose ``describe()`` is a non-empty string. Running
    jobs is left to the executor's own tests (it may need a cluster)."""
    name, cls, what = check_common(EXECUTORS, name_or_cls)
    expect("retries" in component_options(cls), what, "must accept the 'retries' option")
    executor = build_component(cls, what, **options)
    expect(isinstance(executor, Executor), what, f"must be an Executor subclass, got {type(executor).__name__}")
    text = executor.describe()
    expect(isinstance(text, str) and bool(text), what, f"describe() must return a non-empty string, got {text!r}")
    return executor
