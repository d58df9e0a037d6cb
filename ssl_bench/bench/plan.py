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

A top-level ``image_sizes: [[768, 384], [1536, 768]]`` (or ``--image-size 64x32,96x48``, which
replaces it) runs every method at every image size: one run directory per method and size, named
``<method>-<height>x<width>`` (:func:`ssl_bench.components.size_suffix`; with label fractions
too, ``<method>-768x384-f0.25``). A profile sets its own image size (smoke 64x32, quick 128x64,
paper 768x384) to keep its runs as fast as it promises, so sizes sensible for one profile are
not for another: ``image_sizes`` may instead map profile names to their sizes,
``image_sizes: {paper: [[768, 384], [1536, 768]], smoke: [[64, 32], [96, 48]]}``, and a run
takes its profile's list (a profile the mapping lacks is one error line). The first size listed
is the reference size: the leaderboard's baseline and control are their runs at it.

A top-level ``external:`` (:mod:`.external`) names training and test cohorts (datasets with
their folders and options): every method runs a cross-validation on each training cohort
(``<method>-<cohort>-cv``; the first cohort's are the leaderboard's rows) and, per test cohort,
is trained on all of the training cohort and tested on the other (``<method>-<train>-to-<test>``);
the cohorts' data settings are set at the level of the flags.

Precedence, lowest first: ``defaults`` < the method's entry < profile < the method's ``fixed``
entry < command-line flags < ``--set`` (the profile applies on top, so ``--profile smoke`` shrinks
every method; ``fixed`` holds what defines a method and must survive any profile, e.g. the
random-init baseline's ``fixed: {model: {pretrained: none}}`` against the ``paper`` profile's
ImageNet initialisation, or the zoo MAE's ViT backbone,
``fixed: {model: {backbone: vit_tiny_patch16_224}}``). A label fraction and an image size of
the file's axes are set at the level of the flags, over the profile and ``fixed``; since the run
names carry the size, ``image_sizes`` with a ``--set data.image_size`` (or a
``data.image_size`` flag) is refused in one line. Every method
gets the same dataset, seed and split, hence identical folds.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..components import display_name, run_name, size_suffix
from ..config import PROFILES, Config, build_config, load_yaml, parse_image_sizes
from ..errors import ConfigError
from .external import ExternalPair, ExternalStudy, check_no_data_overrides, parse_external


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
    #: the bench file's row (method) of each config, in the order of ``configs``; a config's own
    #: ``method`` adds the image size when the plan has ``image_sizes``
    rows: list[str] = field(default_factory=list)
    #: the image sizes every method runs at (the bench file's ``image_sizes`` or ``--image-size``),
    #: the first the reference size; ``()`` without them
    image_sizes: tuple[tuple[int, int], ...] = ()
    #: the bench file's ``external`` section with every method's internal and external runs; None without one
    external: ExternalStudy | None = None

    @property
    def methods(self) -> list[str]:
        return [display_name(c) for c in self.configs]

    def ranked(self, cfg: Config) -> bool:
        """Whether ``cfg``'s run is a row of the leaderboard: every run, but with an external
        study only the first training cohort's cross-validation runs (the others hold other
        data, so they are not comparable with them; the external table reports them)."""
        if self.external is None:
            return True
        first = self.external.train[0].name
        return any(p.internal is cfg and p.train == first for p in self.external.pairs)

    def baseline_run(self, seed: int | None = None, finished: Callable[[Config], bool] = lambda c: True
                     ) -> str | None:
        """The baseline's run as the report names it: the first preferred baseline method (of
        ``seed``) whose runs all ``finished``, at the reference image size and its largest label
        fraction, where its curves are anchored; None when the file names no baseline or none of
        them ran (``--only`` left them out, or their jobs failed)."""
        runs = self._baseline_runs(seed, finished)
        return display_name(self._anchor(runs)) if runs else None

    def baseline_note(self, seed: int | None = None, finished: Callable[[Config], bool] = lambda c: True
                      ) -> str | None:
        """One line when the baseline is not the bench file's first choice, else None: which
        preferred baselines did not run (left out by ``--only``) or did not finish, and what the
        others are tested against instead, or that the leaderboard has no p-values."""
        runs = self._baseline_runs(seed, finished)
        chosen = self._row(runs[0]) if runs else None
        if not self.baselines or chosen == self.baselines[0]:
            return None
        skipped = self.baselines[: self.baselines.index(chosen)] if chosen else self.baselines
        ran = set(self.rows)
        why = "; ".join(f"{m} {'did not finish' if m in ran else 'was left out by --only'}" for m in skipped)
        if chosen is None:
            return (f"baseline: {why}, so the leaderboard has no p-values against a baseline "
                    f"(name a method that ran with --baseline METHOD)")
        return f"baseline: {why}; the others are tested against {chosen} instead"

    def control_run(self, seed: int | None = None, finished: Callable[[Config], bool] = lambda c: True
                    ) -> str | None:
        """The control's run as the report names it (of ``seed``, at the reference image size and
        its largest label fraction), or None when the file names no control or its runs did not
        all finish."""
        runs = self._runs_of(self.control, seed)
        if not runs or not all(finished(c) for c in runs):
            return None
        return display_name(self._anchor(runs))

    def _row(self, cfg: Config) -> str:
        """The bench file's method (row) that ``cfg`` runs."""
        return self.rows[next(i for i, c in enumerate(self.configs) if c is cfg)] if self.rows else str(cfg.method)

    def _runs_of(self, method: str | None, seed: int | None) -> list[Config]:
        """The configs of the bench file's ``method`` (of ``seed``)."""
        rows = self.rows or [str(c.method) for c in self.configs]
        return [c for c, row in zip(self.configs, rows) if row == method and (seed is None or c.seed == seed)]

    def _anchor(self, runs: list[Config]) -> Config:
        """Among one method's runs, the one its curves are anchored at: at the reference image
        size (the first of ``image_sizes``), then at the largest label fraction."""
        reference = [c for c in runs if not self.image_sizes or tuple(c.data.image_size) == self.image_sizes[0]]
        return max(reference or runs, key=lambda c: c.data.label_fraction)

    def _baseline_runs(self, seed: int | None, finished: Callable[[Config], bool]) -> list[Config]:
        """The runs (of ``seed``) of the first preferred baseline method that all finished."""
        for method in self.baselines:
            runs = self._runs_of(method, seed)
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


def _file_sizes(path, value) -> dict[str, tuple[tuple[int, int], ...]] | tuple[tuple[int, int], ...]:
    """The bench file's ``image_sizes``: a list of ``[height, width]`` pairs for every profile, or
    a mapping of profile names to such lists, each checked; ``()`` without one."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        return parse_image_sizes(value, f"{path}: image_sizes")
    unknown = [name for name in value if name not in PROFILES]
    if unknown:
        raise ConfigError(f"{path}: image_sizes names unknown profile(s) {', '.join(map(str, unknown))}; "
                          f"profiles: {', '.join(PROFILES)}")
    return {name: parse_image_sizes(sizes, f"{path}: image_sizes.{name}") for name, sizes in value.items()}


def _sizes_for(path, sizes, profile: str) -> tuple[tuple[int, int], ...]:
    """The image sizes of a run of ``profile``: the file's list, or its profile's entry."""
    if not isinstance(sizes, dict):
        return sizes
    if profile not in sizes:
        raise ConfigError(f"{path}: image_sizes gives no sizes for the {profile} profile (only for "
                          f"{', '.join(sizes)}); add them, or give the sizes with --image-size HxW,HxW")
    return sizes[profile]


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
    image_sizes: tuple[tuple[int, int], ...] = (),
    cohort_roots: dict[str, str] | None = None,
) -> BenchPlan:
    """The bench file at ``path`` resolved into one config per method (x seed x label fraction x
    image size, or x cohort with an ``external`` section: :mod:`.external`); ``baseline``
    (``--baseline``) replaces the file's baseline preference, ``fractions`` its
    ``label_fractions``, ``image_sizes`` its ``image_sizes`` and ``cohort_roots``
    (``--cohort-root``) its cohorts' folders."""
    data = load_yaml(path)
    unknown = set(data) - {"defaults", "methods", "description", "label_fractions", "image_sizes", "baseline",
                           "control", "external"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; expected defaults, methods, "
                          f"label_fractions, image_sizes, baseline, control, external")
    fractions = tuple(fractions) or _file_fractions(path, data.get("label_fractions"))
    sizes = tuple(image_sizes) or _file_sizes(path, data.get("image_sizes"))
    study = parse_external(path, data.get("external"), cohort_roots)
    if study is not None:
        check_no_data_overrides(path, flags or {}, tuple(sets), bool(fractions or sizes))
    if sizes and "data.image_size" in (flags or {}):
        raise _size_conflict(path)
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
    configs: list[Config] = []
    rows: list[str] = []
    used_sizes: tuple[tuple[int, int], ...] = ()
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
                if study is not None:
                    _add_external_runs(study, name, merged, method_flags, profile, sets, default_profile,
                                       configs, rows)
                    continue
                if not sizes:
                    configs.append(build_config(profile, merged, method_flags, sets, profile_over_file=True,
                                                default_profile=default_profile))
                    rows.append(name)
                    continue
                if isinstance(sizes, dict):  # the run's profile (the flag's, else the device's) picks its sizes
                    used_sizes = _sizes_for(path, sizes, build_config(
                        profile, merged, method_flags, sets, profile_over_file=True,
                        default_profile=default_profile).profile)
                else:
                    used_sizes = sizes
                for size in used_sizes:
                    suffix = size_suffix(size)
                    at_size = {**merged, "method": f"{merged['method']}{suffix}", "name": f"{merged['name']}{suffix}"}
                    cfg = build_config(profile, at_size, {**method_flags, "data.image_size": size}, sets,
                                       profile_over_file=True, default_profile=default_profile)
                    if tuple(cfg.data.image_size) != tuple(size):  # a --set changed it after the axis
                        raise _size_conflict(path)
                    configs.append(cfg)
                    rows.append(name)
    names = [run_name(c) for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two methods would write the same run directory")
    return BenchPlan(Path(path), configs, baselines, control, rows, used_sizes, study)


def _add_external_runs(study: ExternalStudy, row: str, merged: dict, method_flags: dict[str, Any],
                       profile: str | None, sets: tuple[str, ...], default_profile: Callable[[str], str] | None,
                       configs: list[Config], rows: list[str]) -> None:
    """A method's runs of the external study: per training cohort its internal cross-validation
    and its external test on each test cohort (:mod:`.external`). The first training cohort's
    internal run is the method's leaderboard row; every internal run carries the method's name
    (the external table's method column, read from the runs), and the plan's ``rows`` name every
    other run by its run name, so that no baseline or control lookup of the leaderboard finds it."""
    for index, train in enumerate(study.train):
        name = study.internal_name(merged["name"], train)
        internal = build_config(profile, {**merged, "name": name},
                                {**method_flags, **study.train_flags(train)}, sets, profile_over_file=True,
                                default_profile=default_profile)
        configs.append(internal)
        rows.append(row if index == 0 else name)
        for test in study.test:
            name = study.external_name(merged["name"], train, test)
            external = build_config(profile, {**merged, "method": name, "name": name},
                                    {**method_flags, **study.test_flags(train, test)}, sets, profile_over_file=True,
                                    default_profile=default_profile)
            configs.append(external)
            rows.append(name)
            study.pairs.append(ExternalPair(row, internal.seed, train.name, test.name, internal, external))


def _size_conflict(path) -> ConfigError:
    return ConfigError(f"{path}: image_sizes runs every method at each of its sizes and names the runs by them, "
                       f"so data.image_size cannot be set too; give the sizes with --image-size HxW,HxW")


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
