"""Contract checks for components: does a pretext task, transfer, network, dataset or executor do
what the toolkit expects of its kind? Meant for pytest, in-tree and in plugin packages::

    from ssl_bench.testing import check_pretext

    def test_my_task_meets_the_contract():
        check_pretext("my_task")                  # the registered name, or the class
        check_pretext("my_task", strength=0.5)    # with options

Every ``check_*`` builds the component with the given options (defaults otherwise), exercises
it on tiny random data on the CPU, and raises :class:`ContractError` (an ``AssertionError``, so
pytest shows it as a plain test failure) saying what was expected and what was found. On success
it returns what it built (the task, the trained classifier, the network, the loaded dataset, the
executor) for further checks of your own. Checked for every kind:

- registered in its registry (the class or factory is found under the name);
- documented: its own docstring has a summary line (``ssl-bench list`` shows it);
- every option (constructor keyword, except the arguments the toolkit passes itself) has a
  default, and defaults are plain config values (``None``, bool, int, float, str, or a
  list/tuple of those), since ``params.<name>.<option>`` comes from YAML or ``--set``.

Kind-specific checks are listed in each function's docstring. :func:`check_component` dispatches
on the kind; :func:`isolated_registries` undoes registrations made inside it (for tests that
register throw-away components).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

from ..registry import ALL_REGISTRIES, ensure_loaded
from .common import PRETEXT_KINDS, SAMPLE_PRETEXTS, ContractError
from .datasets import check_dataset
from .executors import check_executor
from .networks import check_network
from .pretexts import check_pretext
from .transfers import check_transfer, tiny_fit_context


__all__ = [
    "ContractError",
    "check_component",
    "check_dataset",
    "check_executor",
    "check_network",
    "check_pretext",
    "check_transfer",
    "isolated_registries",
    "tiny_fit_context",
    "PRETEXT_KINDS",
    "SAMPLE_PRETEXTS",
]


_CHECKS: dict[str, Callable[..., Any]] = {
    "pretexts": check_pretext,
    "transfers": check_transfer,
    "networks": check_network,
    "datasets": check_dataset,
    "executors": check_executor,
}


def check_component(kind: str, name_or_obj: Any, **kwargs: Any) -> Any:
    """``check_<kind>(name_or_obj, **kwargs)`` for ``kind`` in ``pretexts``, ``transfers``,
    ``networks``, ``datasets``, ``executors`` (singular accepted too)."""
    key = kind if kind in _CHECKS else f"{kind}s"
    if key not in _CHECKS:
        raise ValueError(f"unknown component kind '{kind}'; one of {', '.join(_CHECKS)}")
    return _CHECKS[key](name_or_obj, **kwargs)


@contextlib.contextmanager
def isolated_registries() -> Iterator[None]:
    """Undo, on exit, every registration and removal made inside the block (built-ins and
    plugins are loaded first, so they stay)."""
    ensure_loaded()
    saved = {kind: dict(reg._entries) for kind, reg in ALL_REGISTRIES.items()}
    try:
        yield
    finally:
        for kind, reg in ALL_REGISTRIES.items():
            reg._entries.clear()
            reg._entries.update(saved[kind])
