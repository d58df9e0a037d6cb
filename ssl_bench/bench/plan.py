"""A benchmark file (e.g. ``benchmarks/table2.yaml``) turned into one resolved config per method.

Format::

    defaults: {<config keys applied to every method>}
    methods:
      ResNet: {pretext: none, transfer: finetune}
      TSBN-U: {pretext: gsim, transfer: collab, model: {pretext_net: unet}}

A top-level ``baseline: <method>`` names the method the leaderboard tests the others against
(default: ResNet, Table II's baseline); with label fractions, each curve is tested against the
baseline's at the same fraction. A list, ``baseline: [Supervised-ImageNet, Supervised-random]``,
is an order of preference: the first that ran to the end is the baseline (``--only`` may leave
one out, or its jobs may fail, e.g. without its ImageNet weights), and the bench says which. A
file without ``baseline`` has no p-values against a baseline. A top-level ``control: <method>``
names the control, the method every other must beat to show it reads lesions (Table II's
``Non-spatial``); the leaderboard compares each method with it. Roles are declared, never read
from a method's name.

A top-level ``label_fractions: [0.1, 0.25, 0.5, 1.0]`` (or ``--label-fraction 0.1,0.25`` on the
command line, which replaces it) runs every method at every fraction: one run directory per
method and fraction, named ``<method>-f<fraction>`` below 1 (:func:`ssl_bench.components.run_name`).

Precedence, lowest first: ``defaults`` < the method's entry < profile < the method's ``fixed``
entry < command-line flags < ``--set`` (the profile applies on top, so ``--profile smoke`` shrinks
every method; ``fixed`` holds what defines a method and must survive any profile, e.g. the
random-init baseline's ``fixed: {model: {pretrained: none}}`` against the ``paper`` profile's
ImageNet initialisation, or the zoo MAE's ViT backbone,
``fixed: {model: {backbone: vit_tiny_patch16_224}}``). Every method
gets the same dataset, seed and split, hence identical folds.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..components import display_name, run_name
from ..config import Config, build_config, load_yaml
from ..errors import ConfigError


#: where a bench writes by default: ``bench-runs/<bench file stem>/``, apart from ``run``'s ``runs/``
#: (so that ``ssl-bench report runs/*`` never mixes a bench's runs with single runs)
BENCH_OUT = "bench-runs"


def default_out(bench_file: str | Path) -> str:
    """The bench's output folder when none is given: ``bench-runs/table2`` for
    ``benchmarks/table2.yaml``."""
    return str(Path(BENCH_OUT) / Path(bench_file).stem)


@dataclass
class BenchPlan:
    path: Path
    configs: list[Config]
    #: the bench file's ``baseline``, in order of preference: the methods the others are tested against
    baselines: tuple[str, ...] = ()
    #: the bench file's ``control``: the method every other must beat to show it reads lesions
    #: (Table II's Non-spatial reference row); None without one
    control: str | None = None

    @property
    def methods(self) -> list[str]:
        return [display_name(c) for c in self.configs]

    def baseline_run(self, seed: int | None = None, finished: Callable[[Config], bool] = lambda c: True
                     ) -> str | None:
        """The baseline's run as the report names it: the first preferred baseline method (of
        ``seed``) whose runs all ``finished``, at its largest label fraction, where its
        label-efficiency curve is anchored; None when the file names no baseline or none of them
        ran (``--only`` left them out, or their jobs failed)."""
        runs = self._baseline_runs(seed, finished)
        return display_name(max(runs, key=lambda c: c.data.label_fraction)) if runs else None

    def baseline_note(self, seed: int | None = None, finished: Callable[[Config], bool] = lambda c: True
                      ) -> str | None:
        """One line when the baseline is not the bench file's first choice, else None: which
        preferred baselines did not run (left out by ``--only``) or did not finish, and what the
        others are tested against instead, or that the leaderboard has no p-values."""
        runs = self._baseline_runs(seed, finished)
        chosen = runs[0].method if runs else None
        if not self.baselines or chosen == self.baselines[0]:
            return None
        skipped = self.baselines[: self.baselines.index(chosen)] if chosen else self.baselines
        ran = {c.method for c in self.configs}
        why = "; ".join(f"{m} {'did not finish' if m in ran else 'was left out by --only'}" for m in skipped)
        if chosen is None:
            return (f"baseline: {why}, so the leaderboard has no p-values against a baseline "
                    f"(name a method that ran with --baseline METHOD)")
        return f"baseline: {why}; the others are tested against {chosen} instead"

    def control_run(self, seed: int | None = None, finished: Callable[[Config], bool] = lambda c: True
                    ) -> str | None:
        """The control's run as the report names it (of ``seed``, at its largest label fraction),
        or None when the file names no control or its runs did not all finish."""
        runs = [c for c in self.configs if c.method == self.control and (seed is None or c.seed == seed)]
        if not runs or not all(finished(c) for c in runs):
            return None
        return display_name(max(runs, key=lambda c: c.data.label_fraction))

    def _baseline_runs(self, seed: int | None, finished: Callable[[Config], bool]) -> list[Config]:
        """The runs (of ``seed``) of the first preferred baseline method that all finished."""
        for method in self.baselines:
            runs = [c for c in self.configs if c.method == method and (seed is None or c.seed == seed)]
            if runs and all(finished(c) for c in runs):
                return runs
        return []


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _file_fractions(path, value) -> tuple[float, ...]:
    """The bench file's ``label_fractions`` (a list of numbers in (0, 1]), or ``()``."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0 < item <= 1:
            raise ConfigError(f"{path}: label_fractions must be a list of numbers in (0, 1], got {value!r}")
        out.append(float(item))
    if len(set(out)) != len(out):
        raise ConfigError(f"{path}: label_fractions lists a fraction twice: {value!r}")
    return tuple(out)


def load_plan(
    path: str | Path,
    profile: str | None = None,
    flags: dict[str, Any] | None = None,
    sets: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
    seeds: tuple[int, ...] = (),
    default_profile: Callable[[str], str] | None = None,
    fractions: tuple[float, ...] = (),
    baseline: str | None = None,
) -> BenchPlan:
    """The bench file at ``path`` resolved into one config per method (x seed x label fraction);
    ``baseline`` (``--baseline``) replaces the file's baseline preference."""
    data = load_yaml(path)
    unknown = set(data) - {"defaults", "methods", "description", "label_fractions", "baseline", "control"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; expected defaults, methods, "
                          f"label_fractions, baseline, control")
    fractions = tuple(fractions) or _file_fractions(path, data.get("label_fractions"))
    methods = data.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"{path}: 'methods' must map method names to their settings")
    for name in only:
        _require_method(path, "--only", name, methods)
    baselines = _baselines(path, data.get("baseline"), methods, baseline)
    control = data.get("control")
    if control is not None and (not isinstance(control, str) or control not in methods):
        raise ConfigError(f"{path}: control {control!r} is not one of its methods ({', '.join(methods)})")
    defaults = data.get("defaults") or {}
    configs = []
    for seed in seeds or (None,):
        for fraction in fractions or (None,):
            for name, values in methods.items():
                if only and name not in only:
                    continue
                merged = _merge(defaults, values or {})
                fixed = merged.pop("fixed", None) or {}
                if not isinstance(fixed, dict):
                    raise ConfigError(f"{path}: methods.{name}.fixed must be a mapping of config keys")
                merged.setdefault("method", name)
                merged.setdefault("name", name if seed is None or len(seeds) == 1 else f"{name}-seed{seed}")
                method_flags = {**fixed, **(flags or {})}
                if seed is not None:
                    method_flags["seed"] = seed
                if fraction is not None:
                    method_flags["data.label_fraction"] = fraction
                cfg = build_config(profile, merged, method_flags, sets, profile_over_file=True,
                                   default_profile=default_profile)
                configs.append(cfg)
    names = [run_name(c) for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two methods would write the same run directory")
    return BenchPlan(Path(path), configs, baselines, control)


def _require_method(path, flag: str, name: str, methods: dict) -> None:
    """One line naming the closest methods when ``name`` (given with ``flag``) is not one of the file's."""
    if name not in methods:
        close = difflib.get_close_matches(name, list(methods), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"{flag} {name}: no such method in {path}.{hint} Methods: {', '.join(methods)}")


def _baselines(path, value, methods: dict, override: str | None) -> tuple[str, ...]:
    """The baseline methods in order of preference: ``--baseline`` (``override``) alone, else the
    bench file's ``baseline`` (a method name or a list of them)."""
    if override is not None:
        _require_method(path, "--baseline", override, methods)
        return (override,)
    if value is None:
        return ()
    names = value if isinstance(value, list) else [value]
    for name in names:
        if not isinstance(name, str) or name not in methods:
            raise ConfigError(f"{path}: baseline '{name}' is not one of its methods ({', '.join(methods)})")
    return tuple(names)
