"""External validation as a bench study: a bench file's ``external:`` section, the cohorts a method
is trained on and those it is tested on, turned into each method's runs.

Format::

    external:
      train:                       # training cohorts; the first is the leaderboard's
        CBIS-DDSM: {dataset: cbis_ddsm, root: data/cbis-ddsm, params: {split: train}}
        VinDr-Mammo: {dataset: vindr_mammo, root: data/vindr, params: {split: training}}
      test:                        # external test cohorts
        INbreast: {dataset: inbreast, root: data/inbreast}

A cohort is a registered dataset, its folder (``root``, which must exist; ``bench --cohort-root
NAME=DIR`` replaces it) and its options (``params``: ``params.<dataset>``). Each method then runs, per training
cohort ``T``:

- ``<method>-<T>-cv``: the **internal** estimate, cross-validation on ``T`` (the bench's folds
  and split, grouped by patient by default);
- per test cohort ``E``, ``<method>-<T>-to-<E>``: the **external** run, trained on all of ``T``
  and tested on all of ``E`` (``data.test_dataset``: one fold, the same preprocessing).

Every run records its cohorts' names (``data.cohort``, ``data.test_cohort``: labels, never the
results). The report sets each external AUC against its internal one (the drop, :mod:`ssl_bench.report.
external`), finding the pairs in the saved runs' configs, never in their names; the pairs declared
here (:class:`ExternalPair`) are what it must find. Only the first training cohort's internal runs
are comparable with each other on one leaderboard (same data, same folds); the others are in the
external table only.

This is a study of where the data come from, so the cohorts own the data settings: a
``--dataset``, ``--data-root``, ``--test-dataset``, ``--test-data-root`` or ``--split
official`` (or their ``--set``) beside it is refused in one line, and so are the label-fraction
and image-size axes (one study per bench).

Validation as in Collins et al. (2015), TRIPOD, and Steyerberg & Harrell (2016), "Prediction
models need appropriate internal, internal-external, and external validation", J Clin Epidemiol
69:245-247.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, parse_set_option
from ..errors import ConfigError

#: what the cohorts set, so no flag or ``--set`` may
COHORT_KEYS = ("data.dataset", "data.root", "data.test_dataset", "data.test_root", "data.cohort", "data.test_cohort")


@dataclass(frozen=True)
class Cohort:
    """A dataset as a training or test cohort: its name in the bench file and run names, the
    registered dataset, its folder and its options."""

    name: str
    dataset: str
    root: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExternalPair:
    """One method's internal estimate on a training cohort and one external test of it."""

    row: str  # the bench file's method
    seed: int
    train: str  # the training cohort's name
    test: str  # the test cohort's name
    internal: Config
    external: Config


@dataclass
class ExternalStudy:
    """The bench file's ``external`` section, resolved."""

    train: tuple[Cohort, ...]
    test: tuple[Cohort, ...]
    pairs: list[ExternalPair] = field(default_factory=list)

    def internal_name(self, method: str, train: Cohort) -> str:
        return f"{method}-{train.name}-cv"

    def external_name(self, method: str, train: Cohort, test: Cohort) -> str:
        return f"{method}-{train.name}-to-{test.name}"

    def train_flags(self, train: Cohort) -> dict[str, Any]:
        """The config keys (dotted, at the level of the flags) of a run trained on ``train``."""
        flags: dict[str, Any] = {"data.dataset": train.dataset, "data.root": train.root, "data.cohort": train.name}
        flags.update({f"params.{train.dataset}.{key}": value for key, value in train.params.items()})
        return flags

    def test_flags(self, train: Cohort, test: Cohort) -> dict[str, Any]:
        """The config keys of a run trained on ``train`` and tested on ``test``."""
        flags = self.train_flags(train)
        flags.update({"data.test_dataset": test.dataset, "data.test_root": test.root, "data.test_cohort": test.name})
        flags.update({f"params.{test.dataset}.{key}": value for key, value in test.params.items()})
        return flags


def _cohorts(path, section: str, value: Any, roots: dict[str, str]) -> tuple[Cohort, ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{path}: external.{section} must map cohort names to {{dataset: NAME, root: DIR, params: {{...}}}}"
        )
    out = []
    for name, spec in value.items():
        where = f"{path}: external.{section}.{name}"
        if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
            raise ConfigError(f"{path}: external.{section}: cohort name {name!r} must be a word (it names run folders)")
        if not isinstance(spec, dict) or not isinstance(spec.get("dataset"), str):
            raise ConfigError(f"{where} must give at least its dataset: {{dataset: NAME, root: DIR, params: {{...}}}}")
        unknown = set(spec) - {"dataset", "root", "params"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected dataset, root, params"
            )
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.params must map the dataset's options to values")
        root = roots.get(name, spec.get("root"))
        if root is None or not Path(str(root)).expanduser().is_dir():
            got = "gives no root" if root is None else f"root {root} is not a folder"
            raise ConfigError(
                f"{where}: {got}; give the folder of its {spec['dataset']} data with "
                f"--cohort-root {name}=DIR (or root: in the file)"
            )
        out.append(Cohort(name, spec["dataset"], str(root), dict(params)))
    return tuple(out)


def parse_external(path, value: Any, roots: dict[str, str] | None = None) -> ExternalStudy | None:
    """The bench file's ``external`` section (None without one); ``roots`` (``--cohort-root``)
    replaces cohorts' folders."""
    roots = dict(roots or {})
    if value is None:
        if roots:
            raise ConfigError(f"--cohort-root: {path} has no external section, so no cohorts")
        return None
    if not isinstance(value, dict) or set(value) != {"train", "test"}:
        raise ConfigError(
            f"{path}: external must have exactly the keys train and test (cohort name -> {{dataset, root, params}})"
        )
    study = ExternalStudy(_cohorts(path, "train", value["train"], roots), _cohorts(path, "test", value["test"], roots))
    names = [c.name for c in (*study.train, *study.test)]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"{path}: external names a cohort twice ({', '.join(names)}); each name is one run folder part"
        )
    unknown = sorted(set(roots) - set(names))
    if unknown:
        raise ConfigError(f"--cohort-root {unknown[0]}: no such cohort in {path} (cohorts: {', '.join(names)})")
    for train in study.train:
        for test in study.test:
            if train.dataset == test.dataset and (train.params or test.params):
                raise ConfigError(
                    f"{path}: external cohorts {train.name} and {test.name} are both dataset "
                    f"'{train.dataset}' with their own params, which one run cannot hold apart; "
                    f"use --split official on that dataset instead"
                )
    return study


def check_no_data_overrides(path, flags: dict[str, Any], sets: tuple[str, ...], axes: bool) -> None:
    """One line when a flag, a ``--set`` or a study axis would override what the cohorts decide."""
    given = [k for k in COHORT_KEYS if flags.get(k) is not None]
    given += [key for key, _ in map(parse_set_option, sets) if key in COHORT_KEYS]
    if flags.get("data.split") == "official" or any(parse_set_option(s) == ("data.split", "official") for s in sets):
        given.append("data.split=official")
    if given:
        raise ConfigError(
            f"{path}: its external cohorts decide the data of every run, so {', '.join(given)} cannot "
            f"be set too; give a cohort's folder with --cohort-root NAME=DIR"
        )
    if axes:
        raise ConfigError(
            f"{path}: an external study does not combine with label_fractions or image_sizes "
            f"(--label-fraction, --image-size); run them as separate benches"
        )
