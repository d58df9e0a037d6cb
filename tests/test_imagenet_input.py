"""Pretrained weights see the inputs they were trained on (issue 22, item 2).

A backbone built on RGB weights (a local file, or timm's ImageNet weights read from a Hugging Face
cache laid out here) takes a grey image in [0, 1] and must compute what timm's own RGB model
computes on that image replicated to three channels and normalised with the weights' mean and std
(``timm.data.resolve_data_config``): that reference is built by timm alone, from the same file.
A randomly initialised backbone stays timm's 1-channel model, bit for bit. The normalisation is
part of the module, so it survives ``model.pt`` (what ``ssl-bench predict`` rebuilds), the frozen
probes, a weights file written from such a backbone, MAE's ViT and a resumed fold; ``model.pt``
files written before it (version 2, no ``input_norm``) load as before. Nothing here downloads.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from huggingface_hub import constants as hub_constants
from PIL import Image
from safetensors.torch import save_file

from ssl_bench.config import build_config
from ssl_bench.data.preprocess import preprocess_file
from ssl_bench.errors import UserError
from ssl_bench.experiment.inference import load_fold_models, predict_files
from ssl_bench.experiment.model_file import MODEL_VERSION, load_model_record, model_bytes, model_record
from ssl_bench.experiment.rundir import RunDir
from ssl_bench.models import backbones
from ssl_bench.models.backbones import (
    NormalisedInput,
    create_backbone,
    encode_multiscale,
    input_normalisation,
    pooled_features,
)
from ssl_bench.models.classifiers import classifier_from_record
from ssl_bench.models.heads import _probe_feature_info, backbone_feature_info
from ssl_bench.pretext.mae import MAE
from ssl_bench.registry import TRANSFERS
from ssl_bench.testing.transfers import tiny_fit_context
from ssl_bench.training.scoring import predict_scores

TOLERANCE = 1e-3  # relative error (Frobenius norm) allowed against timm's RGB model


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """One RGB weights file per architecture: a seeded ``timm.create_model(name, pretrained=False)``
    (3 channels, 1000 classes: what ImageNet weights look like), its state dict saved."""
    folder = tmp_path_factory.mktemp("rgb-weights")
    files = {}
    for i, name in enumerate(("resnet18", "resnet50", "convnext_atto", "test_vit", "test_resnet")):
        torch.manual_seed(i)
        path = folder / f"{name}.pth"
        torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
        files[name] = path
    return files


def timm_rgb_reference(name: str, path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """timm's RGB model on the weights file (3 channels, eval mode) and its weights' mean and std
    as ``(1, 3, 1, 1)`` tensors, from ``timm.data.resolve_data_config``."""
    rgb = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    cfg = timm.data.resolve_data_config({}, model=rgb)
    return rgb, torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def grey(*size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- against timm's RGB model


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_pretrained_backbone_is_timms_rgb_model_on_the_normalised_image(weight_files, name):
    """Before the change the 1-channel backbone (RGB stem summed, no normalisation) was 0.74
    (resnet18) and 0.71 (resnet50) away from the reference in relative error."""
    path = weight_files[name]
    model = create_backbone(name, pretrained=str(path), in_chans=1, num_classes=1).eval()
    rgb, mean, std = timm_rgb_reference(name, path)
    x = grey(2, 1, 64, 48)
    with torch.no_grad():
        got = model.forward_features(x)
        want = rgb.forward_features((x.expand(-1, 3, -1, -1) - mean) / std)
        _, final = encode_multiscale(model, x)
    assert got.shape == want.shape
    assert relative_error(got, want) < TOLERANCE
    assert relative_error(final, want) < TOLERANCE  # the multi-scale path the U-Net decoder reads
    # the weights are the file's, unchanged (RGB stem included); the normalisation the config's
    state = torch.load(path, weights_only=True)
    assert torch.equal(model.conv1.conv.weight, state["conv1.weight"])
    assert input_normalisation(model) == {"mean": pytest.approx(mean.flatten().tolist()),
                                          "std": pytest.approx(std.flatten().tolist())}


@pytest.mark.parametrize("name,first_conv,size", [
    ("convnext_atto", "stem.0", (64, 48)),
    ("test_resnet", "conv1.0", (64, 48)),  # a deep stem: the first of its convs
    ("test_vit", "patch_embed.proj", (160, 160)),  # a ViT at its built size; mean and std 0.5
])
def test_the_first_layer_timm_names_gets_the_normalisation(weight_files, name, first_conv, size):
    path = weight_files[name]
    model = create_backbone(name, pretrained=str(path)).eval()
    assert isinstance(model.get_submodule(first_conv), NormalisedInput)
    assert sum(isinstance(m, NormalisedInput) for m in model.modules()) == 1
    rgb, mean, std = timm_rgb_reference(name, path)
    x = grey(2, 1, *size)
    with torch.no_grad():
        got = model.forward_features(x)
        want = rgb.forward_features((x.expand(-1, 3, -1, -1) - mean) / std)
    assert relative_error(got, want) < TOLERANCE


def test_imagenet_weights_from_the_cache_are_normalised(tmp_path, monkeypatch, weight_files):
    """``--pretrained imagenet``: timm's weights, read from its Hugging Face cache (laid out here,
    no network), are normalised as their pretrained config says."""
    cache = tmp_path / "hf-hub"
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(backbones, "_unreachable", lambda url: "simulated: no network")
    weights = backbones.imagenet_weights("resnet18")
    state = torch.load(weight_files["resnet18"], weights_only=True)
    snapshot = cache / ("models--" + weights.hub_id.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    model = create_backbone("resnet18", pretrained="imagenet").eval()
    rgb, mean, std = timm_rgb_reference("resnet18", weight_files["resnet18"])
    x = grey(2, 1, 64, 48)
    with torch.no_grad():
        want = rgb.forward_features((x.expand(-1, 3, -1, -1) - mean) / std)
        assert relative_error(model.forward_features(x), want) < TOLERANCE


def test_frozen_probe_features_are_the_rgb_models(weight_files):
    """The frozen ImageNet control (``--pretext none --transfer linear``, eval mode) pools the
    features of the normalised image."""
    ctx = tiny_fit_context("none", model__backbone="resnet18", model__pretrained=str(weight_files["resnet18"]))
    torch.manual_seed(0)
    probe = TRANSFERS.create("linear").fit(ctx)
    rgb, mean, std = timm_rgb_reference("resnet18", weight_files["resnet18"])
    x = grey(3, 1, 64, 32)
    with torch.no_grad():
        want = pooled_features(rgb, rgb.forward_features((x.expand(-1, 3, -1, -1) - mean) / std))
    assert relative_error(probe.features(x), want) < TOLERANCE


# ---------------------------------------------------------------- random initialisation unchanged


@pytest.mark.parametrize("name,size", [("resnet18", (64, 48)), ("test_vit", (160, 160))])
def test_random_init_is_timms_one_channel_model_unchanged(name, size):
    torch.manual_seed(3)
    ours = create_backbone(name, pretrained=None, in_chans=1, num_classes=1).eval()
    torch.manual_seed(3)
    plain = timm.create_model(name, in_chans=1, num_classes=1).eval()
    a, b = ours.state_dict(), plain.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in plain.named_modules()]
    assert input_normalisation(ours) is None
    x = grey(2, 1, *size)
    with torch.no_grad():
        assert torch.equal(ours(x), plain(x))


# ---------------------------------------------------------------- model.pt, predict, weights files


def rebuild(classifier: torch.nn.Module, tmp_path, backbone: str = "resnet18") -> torch.nn.Module:
    """model_record -> model.pt -> load_model_record -> classifier_from_record -> strict load."""
    path = tmp_path / "model.pt"
    torch.save(model_record(backbone, (64, 32), classifier), path)
    record = load_model_record(path)
    fresh = classifier_from_record(record)
    fresh.load_state_dict(record["state_dict"], strict=True)
    return fresh.eval()


def test_model_pt_records_the_normalisation_and_rebuilds_it(weight_files, tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet18", pretrained=str(weight_files["resnet18"])).eval()
    record = model_record("resnet18", (64, 32), model)
    assert MODEL_VERSION == 4 and record["version"] == 4
    assert record["input_norm"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert model_record("resnet18", (64, 32), create_backbone("resnet18"))["input_norm"] is None
    fresh = rebuild(model, tmp_path)
    assert isinstance(fresh.conv1, NormalisedInput)
    x = grey(4, 1, 64, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_predict_rebuilds_the_normalisation(weight_files, tmp_path):
    """``ssl-bench predict``'s path (``load_fold_models``, ``predict_files``) on a run directory
    whose fold model is built on ImageNet-like weights: the same scores as the trained model."""
    cfg = build_config("smoke", flags={"model.backbone": "resnet18",
                                       "model.pretrained": str(weight_files["resnet18"])})
    torch.manual_seed(0)
    model = create_backbone("resnet18", pretrained=cfg.model.pretrained, image_size=cfg.data.image_size).eval()
    with torch.no_grad():  # move the BatchNorm statistics and the head off their initial values
        model.train()(grey(8, 1, *cfg.data.image_size, seed=5))
    model.eval()
    rundir = RunDir.create(tmp_path, "run")
    rundir.write_config(cfg)
    predictions = {"image_id": ["a"], "patient_id": ["a"], "label": [0], "score": [0.5], "laterality": [""]}
    rundir.write_fold(0, {"op_threshold": 0.5}, pd.DataFrame(predictions),
                      model_bytes(model_record("resnet18", cfg.data.image_size, model)))
    _, models = load_fold_models(rundir.path)
    (k, fresh), = models
    assert k == 0 and isinstance(fresh.conv1, NormalisedInput)
    image = tmp_path / "new.png"
    Image.fromarray((grey(96, 48, seed=6).numpy() * 65535).astype(np.uint16)).save(image)
    table = predict_files(rundir.path, [str(image)], torch.device("cpu"))
    x = torch.from_numpy(preprocess_file(str(image), tuple(cfg.data.image_size)).astype(np.float32))[None, None]
    np.testing.assert_array_equal(table["fold_0"].to_numpy(), predict_scores(model, x, torch.device("cpu")))


@pytest.mark.parametrize("transfer,options", [("linear", {}), ("knn", {"k": 3})])
def test_frozen_probes_round_trip_with_the_normalisation(weight_files, tmp_path, transfer, options):
    ctx = tiny_fit_context("none", model__backbone="resnet18", model__pretrained=str(weight_files["resnet18"]))
    torch.manual_seed(0)
    probe = TRANSFERS.create(transfer, **options).fit(ctx)
    assert input_normalisation(probe) is not None
    fresh = rebuild(probe, tmp_path)
    assert isinstance(fresh.backbone.conv1, NormalisedInput)
    x = grey(5, 1, 64, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), probe.eval()(x))


def test_old_model_files_load_as_before(tmp_path):
    """Version 2 files (no input_norm) and older: no normalisation, the plain timm backbone."""
    torch.manual_seed(0)
    model = create_backbone("test_resnet").eval()
    record = model_record("test_resnet", (64, 32), model)
    for version in (2, 1):
        old = {k: v for k, v in record.items() if k != "input_norm"}
        if version == 1:
            old.pop("architecture")
        torch.save(dict(old, version=version), tmp_path / f"v{version}.pt")
        loaded = load_model_record(tmp_path / f"v{version}.pt")
        assert loaded["input_norm"] is None
        fresh = classifier_from_record(loaded)
        fresh.load_state_dict(loaded["state_dict"], strict=True)
        assert input_normalisation(fresh) is None
        x = grey(2, 1, 64, 32)
        with torch.no_grad():
            assert torch.equal(fresh.eval()(x), model(x))
    torch.save({k: v for k, v in record.items() if k != "input_norm"}, tmp_path / "v3-broken.pt")
    with pytest.raises(UserError, match="missing input_norm"):
        load_model_record(tmp_path / "v3-broken.pt")
    torch.save(dict(record, input_norm={"mean": [0.5], "std": [0.0]}), tmp_path / "v3-bad.pt")
    with pytest.raises(UserError, match="positive std"):
        load_model_record(tmp_path / "v3-bad.pt")


def test_weights_files_written_from_our_backbones(weight_files, tmp_path):
    """A file saved from a normalised backbone loads with its normalisation (``mean``/``std`` from
    the file); one from a randomly initialised backbone (1-channel stem) loads as it is."""
    model = create_backbone("resnet18", pretrained=str(weight_files["resnet18"])).eval()
    with torch.no_grad():
        model.conv1.mean.fill_(0.25)  # not the config's: must come from the file
    torch.save(model.state_dict(), tmp_path / "own.pth")
    again = create_backbone("resnet18", pretrained=tmp_path / "own.pth").eval()
    assert input_normalisation(again)["mean"] == [0.25, 0.25, 0.25]
    x = grey(2, 1, 64, 48)
    with torch.no_grad():
        assert torch.equal(again.forward_features(x), model.forward_features(x))
    torch.manual_seed(0)
    plain = create_backbone("resnet18")
    torch.save(plain.state_dict(), tmp_path / "grey.pth")
    loaded = create_backbone("resnet18", pretrained=tmp_path / "grey.pth").eval()
    assert input_normalisation(loaded) is None and not isinstance(loaded.conv1, NormalisedInput)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x), plain.eval().forward_features(x))


# ---------------------------------------------------------------- the code that reads the stem


def test_mae_and_the_feature_probe_see_one_input_channel(weight_files):
    vit = create_backbone("test_vit", pretrained=str(weight_files["test_vit"]), image_size=(64, 32))
    assert vit.patch_embed.proj.in_channels == 1
    head = MAE().build_masked_head(vit)
    torch.manual_seed(0)
    prediction, target = head(grey(2, 1, 64, 32))
    assert prediction.shape == target.shape and target.shape[-1] == 16 * 16  # 1 channel of pixels
    resnet = create_backbone("resnet18", pretrained=str(weight_files["resnet18"]))
    assert _probe_feature_info(resnet) == backbone_feature_info(resnet)  # probed with 1 channel


def test_a_fold_on_pretrained_weights_resumes_to_the_uninterrupted_result(weight_files, tmp_path):
    """Fold checkpoints save and restore the normalised stem (its buffers included)."""
    from ssl_bench.experiment.fold import train_and_score_fold
    from ssl_bench.experiment.run import prepare_run

    class Killed(Exception):
        pass

    class Store:
        label = "fold 0 (test)"

        def __init__(self, kill_at=None, blob=None):
            self.kill_at, self.blob, self.saves = kill_at, blob, 0

        def load(self):
            return None if self.blob is None else torch.load(io.BytesIO(self.blob), weights_only=True)

        def save(self, state):
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.blob, self.saves = buffer.getvalue(), self.saves + 1
            if self.saves == self.kill_at:
                raise Killed

    cfg = build_config("smoke", flags={"pretext": "none", "transfer": "finetune", "out": str(tmp_path),
                                       "model.pretrained": str(weight_files["test_resnet"])},
                       sets=["train.checkpoint_every=1", "train.epochs=2"])
    run = prepare_run(cfg)
    cpu = torch.device("cpu")
    whole = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, cpu)
    assert whole.model["input_norm"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    killed = Store(kill_at=1)
    with pytest.raises(Killed):
        train_and_score_fold(cfg, run.loaded, run.fold_of, 0, cpu, checkpoint_store=killed)
    resumed = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, cpu, checkpoint_store=Store(blob=killed.blob))
    assert resumed.predictions.equals(whole.predictions)
    assert resumed.model["state_dict"].keys() == whole.model["state_dict"].keys()
    assert all(torch.equal(resumed.model["state_dict"][k], v) for k, v in whole.model["state_dict"].items())
