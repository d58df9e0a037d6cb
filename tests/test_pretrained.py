"""Backbone initialisation (``--pretrained imagenet|PATH|none``): local weights files written
here, timm's ImageNet weights read from a Hugging Face cache laid out here, and the one-line
failure without network. Nothing here downloads: the network probe is replaced, or the hub is
put in offline mode, and the cache is a temporary folder."""
import json
import time

import pytest
import timm
import torch
import yaml
from click.testing import CliRunner
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ssl_bench.cli import main, weights_cmd
from ssl_bench.config import PROFILES, absolute_paths, build_config, weights_source
from ssl_bench.errors import ConfigError
from ssl_bench.models import backbones
from ssl_bench.models.backbones import (
    IMAGENET_WEIGHTS,
    NormalisedInput,
    check_pretrained,
    create_backbone,
    fetch_weights,
    imagenet_weights,
)


def _imagenet_like(name: str) -> dict[str, torch.Tensor]:
    """The state dict of a 3-channel, 1000-class timm model, seeded: what ImageNet weights look like."""
    torch.manual_seed(0)
    return timm.create_model(name, in_chans=3, num_classes=1000).state_dict()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("resnet18", "resnet50"):
        state = _imagenet_like(name)
        torch.save(state, folder / f"{name}.pth")
        files[name] = (folder / f"{name}.pth", state)
    return files


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and no network: the probe says so without asking anyone."""
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(backbones, "_unreachable", lambda url: "simulated: no network")
    return cache


def _put_in_hub_cache(cache, repo_id: str, state: dict, config: dict | None = None) -> None:
    """Lay out ``repo_id``'s ``model.safetensors`` (and ``config.json``) as ``hf_hub_download`` leaves them."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    if config is not None:
        (snapshot / "config.json").write_text(json.dumps(config))


def _check_loaded(model, state, width):
    """Stem = file's RGB conv1 unchanged, behind the weights' input normalisation (ImageNet's mean
    and std), body = file, head fresh."""
    loaded = model.state_dict()
    rgb = state["conv1.weight"]
    assert isinstance(model.conv1, NormalisedInput)
    assert torch.equal(loaded["conv1.conv.weight"], rgb)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(loaded["conv1.mean"], mean.flatten())
    torch.testing.assert_close(loaded["conv1.std"], std.flatten())
    # numerically: a grey image through the stem = the RGB conv on it replicated and normalised
    x = torch.rand(2, 1, 32, 32)
    rgb_out = torch.nn.functional.conv2d((x.expand(-1, 3, -1, -1) - mean) / std, rgb, stride=2, padding=3)
    torch.testing.assert_close(model.conv1(x), rgb_out, rtol=1e-4, atol=1e-4)
    body = [k for k in state if k != "conv1.weight" and not k.startswith("fc.")]
    assert body and all(torch.equal(loaded[k], state[k]) for k in body)
    assert model.fc.weight.shape == (1, width) and model.fc.bias.shape == (1,)


# ---------------------------------------------------------------- a local weights file


@pytest.mark.parametrize("name,width", [("resnet18", 512), ("resnet50", 2048)])
def test_local_file_normalises_input_keeps_body_fresh_head(weight_files, name, width):
    path, state = weight_files[name]
    model = create_backbone(name, pretrained=str(path), in_chans=1, num_classes=1)
    _check_loaded(model, state, width)
    torch.manual_seed(1)
    assert model(torch.randn(2, 1, 64, 32)).shape == (2, 1)


def test_none_is_random_init_and_config_reads_none(weight_files):
    torch.manual_seed(0)
    a = create_backbone("resnet18", pretrained="none")
    torch.manual_seed(0)
    b = create_backbone("resnet18", pretrained=None)
    assert torch.equal(a.conv1.weight, b.conv1.weight) and a.conv1.weight.shape[1] == 1
    assert not torch.equal(a.layer1[0].conv1.weight, weight_files["resnet18"][1]["layer1.0.conv1.weight"])
    for cfg in (
        build_config("smoke", flags={"model.pretrained": "none"}),
        build_config("paper", sets=["model.pretrained=none"]),
        build_config("smoke", file_values={"model": {"pretrained": None}}),
        build_config("smoke", file_values={"model": {"pretrained": ""}}),
    ):
        assert cfg.model.pretrained is None


def test_missing_or_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*nope.pth") as info:
        create_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    assert "\n" not in str(info.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a state dict\n" * 20)
    with pytest.raises(ConfigError, match="could not load pretrained weights .*junk.pth") as info:
        create_backbone("resnet18", pretrained=junk)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- ImageNet through timm


def test_which_imagenet_weights():
    assert IMAGENET_WEIGHTS["resnet50"] == "resnet50.tv_in1k"
    w = imagenet_weights("resnet50")
    assert (w.tagged, w.hub_id) == ("resnet50.tv_in1k", "timm/resnet50.tv_in1k")
    # elsewhere timm's default tag; an explicit tag as given
    assert imagenet_weights("resnet18").tagged == f"resnet18.{timm.models.get_pretrained_cfg('resnet18').tag}"
    assert imagenet_weights("resnet50.a1_in1k").tagged == "resnet50.a1_in1k"
    with pytest.raises(ConfigError, match="no pretrained weights 'resnet50.nope'.*resnet50.a1_in1k"):
        imagenet_weights("resnet50.nope")
    untrained = next(m for m in timm.list_models() if not timm.models.is_model_pretrained(m))
    with pytest.raises(ConfigError, match="no pretrained weights for backbone"):
        imagenet_weights(untrained)
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        create_backbone("resnet5", pretrained="imagenet")


@pytest.mark.parametrize("how", ["probe fails", "HF_HUB_OFFLINE"])
def test_imagenet_without_network_fails_at_once_in_one_line(hub_cache, monkeypatch, how):
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

        def no_probe(url):
            raise AssertionError("no probe in offline mode")

        monkeypatch.setattr(backbones, "_unreachable", no_probe)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        create_backbone("resnet50", pretrained="imagenet")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message
    for part in ("'resnet50'", "resnet50.tv_in1k", "could not fetch the ImageNet weights", str(hub_cache),
                 "--pretrained PATH", "ssl-bench weights fetch resnet50", "--pretrained none"):
        assert part in message, part
    assert ("HF_HUB_OFFLINE is set" if how == "HF_HUB_OFFLINE" else "simulated: no network") in message


@pytest.mark.parametrize("offline_env", [False, True])
def test_cached_imagenet_weights_load_without_network(hub_cache, monkeypatch, offline_env):
    """Weights already in the cache load through timm's own hub path, network or not."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", offline_env)
    state = _imagenet_like("resnet18")
    w = imagenet_weights("resnet18")
    assert w.cached() is None
    _put_in_hub_cache(hub_cache, w.hub_id, state)
    assert w.cached() is not None and w.cached().is_relative_to(hub_cache)
    model = create_backbone("resnet18", pretrained="imagenet")
    _check_loaded(model, state, 512)
    assert hub_constants.HF_HUB_OFFLINE is offline_env  # offline mode only for the load
    assert fetch_weights("resnet18") == (w, w.cached())


def test_download_failure_is_one_line(monkeypatch, hub_cache):
    """A network that answers the probe but fails during timm's download: one line too."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(backbones, "_unreachable", lambda url: None)

    def failing_download(*args, **kwargs):
        raise LocalEntryNotFoundError("connection reset\nwhile downloading")

    monkeypatch.setattr(backbones.timm, "create_model", failing_download)
    with pytest.raises(ConfigError) as info:
        create_backbone("resnet18", pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message and "connection reset while downloading" in message
    assert "ssl-bench weights fetch resnet18" in message


def test_probe_is_bounded(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(backbones, "PROBE_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    why = backbones._unreachable.__wrapped__("http://192.0.2.1/")  # TEST-NET-1: never answers
    assert isinstance(why, str) and why
    assert time.perf_counter() - start < 2


def test_check_pretrained_builds_nothing_and_says_the_same(hub_cache, tmp_path, monkeypatch, weight_files):
    def no_model(*args, **kwargs):
        raise AssertionError("check_pretrained created a model")

    monkeypatch.setattr(backbones.timm, "create_model", no_model)
    for ok in (None, "none", str(weight_files["resnet18"][0])):
        check_pretrained("resnet18", ok)
    with pytest.raises(ConfigError, match="not found: .*nope.pth"):
        check_pretrained("resnet18", tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="ssl-bench weights fetch resnet50"):
        check_pretrained("resnet50", "imagenet")
    _put_in_hub_cache(hub_cache, "timm/resnet50.tv_in1k", {"x": torch.zeros(1)})
    check_pretrained("resnet50", "imagenet")  # cached: fine without network


def test_paper_profile_starts_from_imagenet_the_others_from_random():
    assert build_config("paper").model.pretrained == "imagenet"
    assert all(build_config(p).model.pretrained is None for p in PROFILES if p != "paper")


# ---------------------------------------------------------------- the CLI


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_run_with_a_weights_file_end_to_end(tmp_path, monkeypatch, weight_files, name):
    path, _ = weight_files[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").symlink_to(path)
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, [
        "run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--backbone", name,
        "--pretrained", "./w.pth", "--fold", "0", "--epochs", "1", "--out", str(out), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    run = out / "none-finetune"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["pretrained"] == "./w.pth"
    assert (run / "folds" / "0" / "model.pt").is_file()


@pytest.mark.parametrize("args,message", [
    (["--pretrained", "imagenet"], "ssl-bench weights fetch test_resnet"),
    (["--pretrained", "./missing.pth"], "pretrained weights file not found: missing.pth"),
])
def test_run_pretrained_errors_exit_2_with_one_line(tmp_path, monkeypatch, hub_cache, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [
        "run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--fold", "0",
        "--out", str(tmp_path / "runs"), "--quiet", *args,
    ])
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output


def test_weights_commands_without_network(hub_cache):
    result = CliRunner().invoke(main, ["weights", "fetch", "resnet50"])
    assert result.exit_code == 2
    lines = _error_lines(result)
    assert len(lines) == 1 and "could not fetch the ImageNet weights of backbone 'resnet50'" in lines[0]
    assert "on a machine with network" in lines[0]
    _put_in_hub_cache(hub_cache, "timm/resnet50.tv_in1k", _imagenet_like("resnet50"))
    result = CliRunner().invoke(main, ["weights", "fetch", "resnet50"])
    assert result.exit_code == 0, result.output
    assert "resnet50: resnet50.tv_in1k -> " + str(hub_cache) in result.output
    result = CliRunner().invoke(main, ["weights", "list", "resnet50", "resnet18"])
    assert result.exit_code == 0, result.output
    assert "resnet50.tv_in1k" in result.output and "resnet18." in result.output


# ---------------------------------------------------------------- timm tags and hub repositories (issue 27, item 4)


def test_what_a_pretrained_value_names_and_that_only_files_are_paths(tmp_path):
    cases = {None: "none", "none": "none", "imagenet": "imagenet", "resnet50.tv_in1k": "tag",
             "vit_small_patch14_dinov2.lvd142m": "tag", "hf-hub:timm/resnet18.a1_in1k": "hub",
             "w.pth": "file", "backbone.safetensors": "file", "./resnet50.tv_in1k": "file", "weights": "file"}
    assert {value: weights_source(value) for value in cases} == cases
    for value, source in cases.items():
        if value:
            moved = absolute_paths({"model": {"pretrained": value}}, base=tmp_path)["model"]["pretrained"]
            assert (moved == str((tmp_path / value).resolve())) if source == "file" else moved == value


def _config(arch: str, mean, std, **extra) -> dict:
    """A timm hub repository's config.json (what push_to_hf_hub writes)."""
    return {"architecture": arch, "num_classes": 1000, **extra, "pretrained_cfg": {
        "input_size": [3, 160, 160], "mean": mean, "std": std, "first_conv": "conv1.0", "classifier": "fc",
        "num_classes": 1000, "license": "apache-2.0"}}


@pytest.mark.parametrize("offline_env", [False, True])
def test_a_timm_tag_and_a_hub_repository_load_from_the_cache_without_network(hub_cache, monkeypatch, offline_env):
    """--pretrained TAG reads timm's repository of the tag, --pretrained hf-hub:NAME a repository
    with its config.json, whose mean and std normalise the grey input; nothing is downloaded."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", offline_env)
    state = _imagenet_like("test_resnet")
    _put_in_hub_cache(hub_cache, "timm/test_resnet.r160_in1k", state)
    tagged = create_backbone("test_resnet", pretrained="test_resnet.r160_in1k")
    assert tagged.conv1[0].normalisation() == {"mean": [0.5] * 3, "std": [0.5] * 3}  # the tag's pretrained_cfg
    assert torch.equal(tagged.conv1[0].conv.weight, state["conv1.0.weight"])
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.25, 0.125]
    _put_in_hub_cache(hub_cache, "lab/mammo-resnet", state, _config("test_resnet", mean, std))
    hub = create_backbone("test_resnet", pretrained="hf-hub:lab/mammo-resnet", num_classes=1)
    assert hub.conv1[0].normalisation() == {"mean": mean, "std": std}
    body = [k for k in state if not k.startswith(("fc.", "conv1.0."))]
    assert all(torch.equal(hub.state_dict()[k], state[k]) for k in body)
    x = torch.rand(2, 1, 32, 32)
    rgb = torch.nn.functional.conv2d((x.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1))
                                     / torch.tensor(std).view(1, 3, 1, 1), state["conv1.0.weight"], stride=2, padding=1)
    torch.testing.assert_close(hub.conv1[0](x), rgb, rtol=1e-5, atol=1e-5)
    check_pretrained("test_resnet", "hf-hub:lab/mammo-resnet")
    # the command's console was made (and sized) when the CLI was first imported: widen it here
    monkeypatch.setattr(weights_cmd.out_console, "width", 400)
    result = CliRunner().invoke(main, ["weights", "list", "test_resnet.r160_in1k", "hf-hub:lab/mammo-resnet"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "test_resnet.r160_in1k" in line or "mammo-resnet" in line]
    assert len(rows) == 2 and all(str(hub_cache) in row for row in rows), result.output  # both cached


def test_tags_and_hub_repositories_that_do_not_fit_are_one_line(hub_cache):
    state = _imagenet_like("test_resnet")
    _put_in_hub_cache(hub_cache, "lab/other-arch", state, _config("resnet18", [0.5] * 3, [0.5] * 3))
    _put_in_hub_cache(hub_cache, "lab/own-args", state, _config("test_resnet", [0.5] * 3, [0.5] * 3,
                                                                model_args={"global_pool": "max"}))
    cases = [
        ("resnet50.tv_in1k", "weights of the architecture 'resnet50', not of the backbone 'test_resnet'"),
        ("test_resnet.nope", "no pretrained weights 'test_resnet.nope'"),
        ("hf-hub:lab/other-arch", "architecture 'resnet18' (its config.json), not of the backbone 'test_resnet'"),
        ("hf-hub:lab/own-args", "arguments of its own (global_pool in its config.json)"),
        ("hf-hub:lab/not-cached", "'ssl-bench weights fetch hf-hub:lab/not-cached' on a machine with network"),
    ]
    for pretrained, message in cases:
        with pytest.raises(ConfigError) as info:
            create_backbone("test_resnet", pretrained=pretrained)
        assert message in str(info.value) and "\n" not in str(info.value), (pretrained, str(info.value))
    with pytest.raises(ConfigError, match="weights fetch vit_small_patch14_dinov2.lvd142m"):
        check_pretrained("vit_small_patch14_dinov2", "vit_small_patch14_dinov2.lvd142m")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--pretrained", "resnet50.tv_in1k", "--quiet"])
    assert result.exit_code == 2 and len(_error_lines(result)) == 1, result.output
