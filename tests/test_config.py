"""Config: profiles, precedence, --set with type checks, unknown keys, YAML round trip, path fields."""
import re

import pytest

from ssl_bench import components
from ssl_bench.config import (
    NO_WEIGHTS,
    PROFILES,
    Config,
    absolute_paths,
    build_config,
    config_from_dict,
    load_yaml,
    parse_image_size,
    path_fields,
    save_yaml,
    weights_file,
)
from ssl_bench.errors import ConfigError
from ssl_bench.training.device import default_profile


def test_paper_profile_matches_the_paper():
    cfg = build_config("paper")
    assert cfg.data.image_size == (768, 384)
    assert cfg.model.backbone == "resnet50"
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size) == (1e-4, 5e-4, 4)
    assert cfg.data.folds == 5 and cfg.train.pos_weight == 15.0


def test_precedence_profile_file_flags_set():
    cfg = build_config(
        "smoke",
        file_values={"train": {"lr": 0.5, "epochs": 7}, "seed": 3},
        flags={"train.epochs": 9},
        sets=["seed=11", "params.gsim.d=0.3", "data.image_size=96x48"],
    )
    assert cfg.train.lr == 0.5  # file over profile
    assert cfg.train.epochs == 9  # flag over file
    assert cfg.seed == 11  # --set over file
    assert cfg.params["gsim"] == {"d": 0.3}
    assert cfg.data.image_size == (96, 48)
    assert cfg.model.backbone == PROFILES["smoke"]["model.backbone"]


def test_profile_over_file_for_bench_files():
    cfg = build_config("smoke", {"train": {"epochs": 30}}, profile_over_file=True)
    assert cfg.train.epochs == PROFILES["smoke"]["train.epochs"]


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError) as info:
        build_config("smoke", sets=["train.lrr=1"])
    assert "train.lrr" in str(info.value) and "train.lr" in str(info.value)


@pytest.mark.parametrize(
    "item, message",
    [("train.epochs=ten", "integer"), ("train.lr=fast", "number"), ("train.compile=maybe", "true/false"),
     ("data.image_size=768", "HEIGHTxWIDTH"), ("epochs", "key=value")],
)
def test_set_type_checking(item, message):
    with pytest.raises(ConfigError, match=message):
        build_config("smoke", sets=[item])


def test_image_size_parsing():
    assert parse_image_size("768x384") == (768, 384)
    assert parse_image_size([64, 32]) == (64, 32)
    with pytest.raises(ConfigError):
        parse_image_size("8x8")


def test_yaml_round_trip(tmp_path):
    cfg = build_config("quick", flags={"pretext": "gsim", "transfer": "collab"}, sets=["params.unet.width=16"])
    save_yaml(cfg, tmp_path / "config.yaml")
    again = config_from_dict(load_yaml(tmp_path / "config.yaml"))
    assert again == cfg
    assert build_config(None, load_yaml(tmp_path / "config.yaml")) == cfg


def test_default_profile_is_quick_on_cpu():
    assert build_config(None, flags={"device": "cpu"}, default_profile=default_profile).profile == "quick"
    with pytest.raises(TypeError, match="default_profile"):
        build_config(None, flags={"device": "cpu"})


def test_run_name_comes_from_what_the_transfer_needs():
    """collab declares it needs a pretext network, so its name carries it; nobody tests 'collab'."""
    assert components.run_name(Config()) == "none-finetune"
    cfg = build_config("smoke", flags={"pretext": "gsim", "transfer": "collab", "model.pretext_net": "rdn"})
    assert components.run_name(cfg) == "gsim-collab-rdn"
    assert components.display_name(cfg) == "gsim-collab-rdn"
    cfg.method = "TSBN-R"
    assert components.display_name(cfg) == "TSBN-R" and components.run_name(cfg) == "gsim-collab-rdn"


#: the config fields that hold a file system path, found by reading ssl_bench/config.py
PATH_KEYS = {"out", "data.root", "data.test_root", "data.cache_dir", "pretext_data.root", "model.pretrained", "log.uri"}
PATH_NAME = re.compile(r"(^|_)(root|dir|path|file|folder|uri|out|pretrained)$")


def flat(values: dict, prefix: str = "") -> dict:
    """A config dict's leaves by dotted key (without the component options under ``params``)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "params":
            out.update(flat(value, f"{prefix}{key}."))
        elif key != "params":
            out[f"{prefix}{key}"] = value
    return out


def put(values: dict, key: str, value) -> None:
    *sections, name = key.split(".")
    for section in sections:
        values = values[section]
    values[name] = value


def test_path_fields_are_declared():
    """The declared path fields are the ones config.py has; and every field whose name or default
    looks like a path is declared (a new path field without ``path_field`` fails here)."""
    assert set(path_fields()) == PATH_KEYS
    looks = {key for key, default in flat(Config().to_dict()).items()
             if PATH_NAME.search(key.rsplit(".", 1)[-1])
             or (isinstance(default, str) and ("/" in default or default.startswith(("~", "."))))}
    assert looks == PATH_KEYS


@pytest.mark.parametrize("key", sorted(PATH_KEYS))
def test_absolute_paths_makes_each_path_field_absolute(key, tmp_path):
    values = build_config("smoke", flags={"data.test_dataset": "inbreast", "pretext_data.dataset": "synthetic"}).to_dict()
    for other in PATH_KEYS:
        put(values, other, str(tmp_path / "elsewhere" / other))  # absolute: kept
    put(values, key, "sub/../weights/x.pth")
    got = absolute_paths(values, tmp_path)
    expected = flat(values) | {key: str(tmp_path.resolve() / "weights" / "x.pth")}
    assert flat(got) == expected and flat(values)[key] == "sub/../weights/x.pth"  # a copy
    for kept in ("~/weights/x.pth", str(tmp_path / "x.pth"), None):
        put(values, key, kept)
        assert flat(absolute_paths(values, tmp_path)) == flat(values)
    again = config_from_dict(got)
    assert flat(again.to_dict())[key] == expected[key]


@pytest.mark.parametrize("key, value", [
    ("model.pretrained", "imagenet"), ("model.pretrained", " ImageNet "), ("model.pretrained", "none"),
    ("model.pretrained", ""), ("model.pretrained", "resnet50.tv_in1k"), ("model.pretrained", "hf-hub:org/name"),
    ("log.uri", "http://server:5000"), ("log.uri", "sqlite:///tmp/mlflow.db"), ("log.uri", "s3://bucket/logs"),
])
def test_keywords_and_uris_are_not_paths(key, value, tmp_path):
    values = Config().to_dict()
    values["out"] = str(tmp_path)
    put(values, key, value)
    assert absolute_paths(values, tmp_path) == values
    assert not path_fields()[key](value)


def test_pretrained_keywords_are_the_backbones():
    """config.py tells a weights file from a keyword, a timm tag or a hub repository with the words
    models/backbones.py loads by (its _source reads config.weights_source; a path object is a file)."""
    from pathlib import Path

    from ssl_bench.models import backbones

    assert all(backbones._source(word) == "none" for word in NO_WEIGHTS) and backbones._source(None) == "none"
    assert backbones._source(Path("resnet50.tv_in1k")) == "file" and backbones._source("resnet50.tv_in1k") == "tag"
    assert not weights_file("ImageNet") and all(not weights_file(w) for w in NO_WEIGHTS) and weights_file("w.pth")
    assert not weights_file("resnet50.tv_in1k") and not weights_file("hf-hub:timm/resnet50.tv_in1k")


@pytest.mark.parametrize("batch, workers, ok", [(8, 2, True), (6, 3, True), (5, 1, True), (7, 2, False), (2, 2, False)])
def test_pretext_workers_need_equal_shares_of_every_batch(batch, workers, ok):
    sets = [f"train.batch_size={batch}", f"train.pretext_workers={workers}"]
    if ok:
        build_config("smoke", sets=sets)
    else:
        with pytest.raises(ConfigError, match="must be a multiple of train.pretext_workers"):
            build_config("smoke", sets=sets)
