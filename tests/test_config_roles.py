"""Config settings declare their role once (ssl_bench/config.py ``setting``), and every key derived
from the config follows the declarations: run identity (``config_key``, the fold checkpoint's
stamp and the run directory's "different configuration" check), the cached pretext stage's key,
the image dataset's key and path resolution. A saved ``config.yaml`` carries its schema, and
``migrate`` reads every committed run directory as the current schema describes it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ssl_bench.config import (CONFIG_SCHEMA, DOWNSTREAM, SAMPLING, VOLATILE, Config, ConfigError, DataConfig,
                              TrainConfig, absolute_paths, build_config, config_from_dict, migrate, path_field,
                              save_yaml, set_value, setting)
from ssl_bench.data.loading import dataset_key, load_evaluation_data
from ssl_bench.experiment.pretext_pool import stage_key
from ssl_bench.experiment.rundir import RunDir, comparable_config, config_key
from ssl_bench.registry import PRETEXTS

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


# --- a contributor adds settings, declaring their role and nothing else

@dataclass
class DataPlus(DataConfig):
    contrast: float = 1.0  # decides how images load (a result setting, the default role)
    prefetch: int = setting(4, role=VOLATILE)
    holdout_site: str = setting("", role=SAMPLING)


@dataclass
class TrainPlus(TrainConfig):
    momentum: float = 0.9
    head_dropout: float = setting(0.0, role=DOWNSTREAM)


@dataclass
class ConfigPlus(Config):
    data: DataPlus = field(default_factory=DataPlus)
    train: TrainPlus = field(default_factory=TrainPlus)
    notes_file: str | None = path_field()
    scratch: str = path_field("scratch", role=VOLATILE)


def extended(**changes) -> ConfigPlus:
    cfg = build_config("smoke", flags={"device": "cpu", "pretext": "simclr", "transfer": "finetune",
                                       "pretext_data.dataset": "synthetic"})
    plus = ConfigPlus(**{**vars(cfg), "data": DataPlus(**vars(cfg.data)), "train": TrainPlus(**vars(cfg.train))})
    for key, value in changes.items():
        set_value(plus, key.replace("__", "."), value)
    return plus


def derived(cfg: ConfigPlus) -> dict[str, str]:
    pool = load_evaluation_data(build_config("smoke", flags={"device": "cpu"}))
    pretext = PRETEXTS.create("simclr", **cfg.component_params("simclr"))
    return {"run": config_key(cfg), "dataset": dataset_key(cfg),
            "stage": stage_key(cfg, pretext, pool, np.ones(len(pool.samples), bool), torch.device("cpu"), None)}


@pytest.fixture(scope="module")
def base():
    return derived(extended())


@pytest.mark.parametrize("change, changes", [
    ({"data__contrast": 1.5}, {"run", "dataset", "stage"}),  # a result setting of the data: in every key
    ({"data__prefetch": 8}, set()),  # volatile: in none
    ({"data__holdout_site": "B"}, {"run"}),  # sampling: the run's, not the images' nor the stage's
    ({"train__momentum": 0.5}, {"run", "stage"}),
    ({"train__head_dropout": 0.5}, {"run"}),  # downstream only: the stage is shared
    ({"scratch": "elsewhere"}, set()),
    ({"notes_file": "notes.txt"}, {"run"}),
])
def test_a_new_setting_enters_the_keys_its_role_says(base, change, changes):
    now = derived(extended(**change))
    assert {k for k in base if now[k] != base[k]} == changes


def test_a_new_path_setting_is_made_absolute(tmp_path):
    values = extended(notes_file="notes.txt", scratch="s").to_dict()
    resolved = absolute_paths(values, base=tmp_path, cls=ConfigPlus)
    assert resolved["notes_file"] == str(tmp_path / "notes.txt") and resolved["scratch"] == str(tmp_path / "s")


def test_declared_roles_of_todays_settings():
    """What each role means, on the settings that carry it today (the lists that kept them by
    hand before: the run directory's volatile keys, the pretext stage's downstream-only ones)."""
    roles = {}
    for section in ("", "data", "train", "model", "pretext_data"):
        cls = type(getattr(Config(), section)) if section else Config
        for f in dataclasses.fields(cls):
            roles[f"{section}.{f.name}".lstrip(".")] = f.metadata.get("role", "result")
    assert sorted(k for k, r in roles.items() if r == VOLATILE) == sorted([
        "fold", "out", "device", "threads", "log", "data.cache_dir", "data.workers", "data.streaming",
        "data.memory_budget_gb", "data.loader_workers", "data.cohort", "data.test_cohort", "train.checkpoint_every",
        "train.probe_every"])
    assert sorted(k for k, r in roles.items() if r == DOWNSTREAM) == ["train.epochs", "train.pos_weight"]
    assert sorted(k for k, r in roles.items() if r == SAMPLING) == [
        "data.folds", "data.label_fraction", "data.split", "data.test_dataset", "data.test_root"]


# --- the schema and migrate()

def committed_runs():
    return sorted(p.parent for p in RESULTS.rglob("config.yaml"))


def test_committed_runs_exist():
    assert len(committed_runs()) >= 20


@pytest.mark.parametrize("run", committed_runs(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_a_committed_run_reads_as_the_current_schema_and_reruns_as_itself(run):
    saved = RunDir.open(run).read_config()
    assert "schema" not in saved
    rerun = config_from_dict(saved)  # what `ssl-bench run --config <its config.yaml>` rebuilds
    assert comparable_config(rerun.to_dict()) == comparable_config(saved)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    assert migrate(raw) == saved
    # the same run saved before the settings that came after schema 1 were recorded
    older = yaml.safe_load((run / "config.yaml").read_text())
    older.pop("schema", None)  # a run written by this version says schema 2; before, no schema
    for section, key in (("data", "label_fraction"), ("data", "test_dataset"), ("data", "test_root"),
                         ("train", "pretext_workers"), ("train", "schedule")):
        if older[section][key] == {"label_fraction": 1.0, "test_dataset": None, "test_root": None,
                                   "pretext_workers": 1, "schedule": "constant"}[key]:
            del older[section][key]
    if older["data"]["label_fraction"] == 1.0 if "label_fraction" in older["data"] else True:
        older["train"].pop("label_budget")
    if not older["pretext_data"]["dataset"]:
        del older["pretext_data"]
    assert comparable_config(migrate(older)) == comparable_config(saved)


def test_backfills_are_the_values_old_runs_ran_with():
    old = {"pretext": "simclr", "data": {"label_fraction": 0.25}, "train": {}}
    now = migrate(old)
    assert now["train"] == {"label_budget": "epochs", "pretext_workers": 1, "schedule": "constant"}
    assert now["data"] == {"label_fraction": 0.25, "test_dataset": None, "test_root": None}
    assert now["pretext_data"] == {"dataset": None, "root": None} and old == {
        "pretext": "simclr", "data": {"label_fraction": 0.25}, "train": {}}  # not changed in place
    assert migrate({"schema": CONFIG_SCHEMA, "train": {}}) == {"train": {}}  # nothing to fill
    # `run --config` with such a run's config.yaml (every top-level setting, no schema) reruns it as it ran
    saved = build_config("smoke", flags={"data.label_fraction": 0.25}).to_dict()
    del saved["train"]["label_budget"]
    assert build_config(file_values=saved).train.label_budget == "epochs"
    partial = {"data": {"label_fraction": 0.25}}  # a config a user wrote: today's defaults
    assert build_config("smoke", file_values=partial).train.label_budget == "steps"
    with pytest.raises(ConfigError, match=f"of schema {CONFIG_SCHEMA + 1}; this ssl-bench reads up to schema "
                                          f"{CONFIG_SCHEMA} \\(upgrade ssl-bench\\)"):
        migrate({"schema": CONFIG_SCHEMA + 1})
    with pytest.raises(ConfigError, match="schema must be a positive integer"):
        migrate({"schema": "two"})


def test_config_yaml_carries_the_schema_and_reads_back(tmp_path):
    cfg = build_config("smoke", flags={"pretext": "gsim", "data.label_fraction": 0.5})
    save_yaml(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert raw["schema"] == CONFIG_SCHEMA and list(raw)[0] == "schema"
    assert build_config(file_values=raw).to_dict() == cfg.to_dict()  # `run --config config.yaml`
    assert config_from_dict(migrate(raw)).to_dict() == cfg.to_dict()
