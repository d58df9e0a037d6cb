"""Config: profiles, precedence, --set with type checks, unknown keys, YAML round trip."""
import pytest

from ssl_bench import components
from ssl_bench.config import PROFILES, Config, build_config, config_from_dict, load_yaml, parse_image_size, save_yaml
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
