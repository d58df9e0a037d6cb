"""``ssl-bench export`` (issue 27, item 3): the export round trip. A fold's backbone written as a
timm state dict in safetensors computes, loaded back in timm (``timm.create_model(name,
pretrained=True, pretrained_cfg_overlay=dict(file=...))``) and in another run (``--pretrained
PATH``), what the fold's own classifier computes, input normalisation included; the pretext stage
exports from the runs that keep it, and the others say in one line why not."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from click.testing import CliRunner
from safetensors import safe_open

from ssl_bench.cli import main
from ssl_bench.experiment.backbone_export import timm_load_call
from ssl_bench.experiment.model_file import load_model_record
from ssl_bench.models.backbone_file import METADATA_KEY, read_provenance
from ssl_bench.models.backbones import NormalisedInput, create_backbone, pooled_features
from ssl_bench.models.classifiers import classifier_from_record

# a normalisation no timm config has, so that only the run's own can reproduce the features
NORM = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125]}
X = torch.rand(3, 1, 64, 32, generator=torch.Generator().manual_seed(3))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def fold_classifier(run, k=0):
    record = load_model_record(run / "folds" / str(k) / "model.pt")
    model = classifier_from_record(record)
    model.load_state_dict(record["state_dict"])
    return record, model.eval()


def features(backbone, x=X):
    with torch.no_grad():
        return pooled_features(backbone, backbone.forward_features(x))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two smoke runs of one fold on test_resnet: fine-tuned for an epoch from RGB weights that
    carry their own normalisation (:data:`NORM`), and a k-NN probe of a random initialisation."""
    base = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    rgb = create_backbone("test_resnet", input_norm=NORM)  # this toolkit's own RGB-stem layout
    torch.save(rgb.state_dict(), base / "rgb.pth")
    common = ["--profile", "smoke", "--fold", "0", "--epochs", "1", "--out", base / "runs", "--quiet"]
    tuned = invoke("run", "--pretext", "none", "--transfer", "finetune", "--pretrained", base / "rgb.pth",
                   "--name", "tuned", *common)
    assert tuned.exit_code == 0, tuned.output
    probe = invoke("run", "--pretext", "none", "--transfer", "knn", "--name", "probe", *common)
    assert probe.exit_code == 0, probe.output
    return base, base / "runs" / "tuned", base / "runs" / "probe"


def test_the_export_round_trip(runs):
    """The fine-tuned backbone: timm's RGB model loaded from the file, fed the grey image
    replicated and normalised with the provenance's mean and std, gives the fold's logits; the
    file as --pretrained PATH rebuilds the same normalised stem and features, in code and in a run."""
    base, tuned, _ = runs
    out = base / "tuned.safetensors"
    result = invoke("export", "--run", tuned, "--out", out)
    assert result.exit_code == 0, result.output
    record, classifier = fold_classifier(tuned)
    assert record["input_norm"] == NORM
    provenance = json.loads((base / "tuned.json").read_text())
    assert read_provenance(out) == provenance  # the header holds what the JSON beside it says
    assert provenance["stage"] == "finetuned" and provenance["num_classes"] == 1 and provenance["in_chans"] == 3
    assert provenance["input_norm"] == NORM and provenance["image_size"] == [64, 32]
    assert provenance["run"]["transfer"] == "finetune" and provenance["data"]["fold"] == 0
    assert provenance["data"]["dataset"] == "synthetic" and provenance["data"]["trained_on_folds"] == [1, 2, 3, 4]
    with safe_open(str(out), framework="pt") as fh:  # timm's keys: the stem unwrapped, no mean/std buffers
        keys = set(fh.keys())
        assert METADATA_KEY in fh.metadata()
    assert keys == set(timm.create_model("test_resnet", num_classes=1).state_dict())
    assert f"file={str(out)!r}" in result.stdout and timm_load_call(provenance, out) in result.stdout

    # timm, as the provenance says: the RGB model on the normalised replicated image
    spec = provenance["timm"]
    model = timm.create_model(spec["model_name"], pretrained=True, **spec["kwargs"],
                              pretrained_cfg_overlay=dict(file=str(out), **spec["pretrained_cfg_overlay"])).eval()
    mean, std = (torch.tensor(NORM[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    assert tuple(timm.data.resolve_data_config({}, model=model)["mean"]) == tuple(NORM["mean"])
    with torch.no_grad():
        torch.testing.assert_close(model((X.expand(-1, 3, -1, -1) - mean) / std), classifier(X),
                                   rtol=1e-5, atol=1e-5)

    # --pretrained PATH: the same normalised stem, the same features (the head is new)
    loaded = create_backbone("test_resnet", pretrained=out).eval()
    assert isinstance(loaded.conv1[0], NormalisedInput) and loaded.conv1[0].normalisation() == NORM
    torch.testing.assert_close(features(loaded), features(classifier), rtol=1e-5, atol=1e-5)
    again = invoke("run", "--pretext", "none", "--transfer", "knn", "--pretrained", out, "--name", "again",
                   "--profile", "smoke", "--fold", "0", "--out", base / "runs", "--quiet")
    assert again.exit_code == 0, again.output
    record, probe = fold_classifier(base / "runs" / "again")
    assert record["input_norm"] == NORM  # the run normalises as the exported backbone was trained
    torch.testing.assert_close(probe.features(X), features(classifier), rtol=1e-5, atol=1e-5)


def test_pretext_stage_of_a_probe_one_input_channel(runs):
    """A k-NN run keeps its pretext-stage backbone (here the random initialisation, 1 input
    channel): exported without a head, it loads in timm with in_chans=1 unchanged, and with
    in_chans=3 as timm's RGB copy of the stem, both computing the probe's features."""
    base, _, probe_run = runs
    out = base / "probe.safetensors"
    result = invoke("export", "--run", probe_run, "--out", out)
    assert result.exit_code == 0, result.output
    provenance = read_provenance(out)
    assert (provenance["stage"], provenance["num_classes"], provenance["in_chans"]) == ("pretext", 0, 1)
    assert provenance["input_norm"] is None and provenance["source"] == "folds/0/model.pt"
    _, probe = fold_classifier(probe_run)
    expected = probe.features(X)
    overlay = dict(file=str(out), **provenance["timm"]["pretrained_cfg_overlay"])
    grey = timm.create_model("test_resnet", pretrained=True, in_chans=1, num_classes=0,
                             pretrained_cfg_overlay=overlay).eval()
    rgb = timm.create_model("test_resnet", pretrained=True, in_chans=3, num_classes=0,
                            pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        torch.testing.assert_close(grey(X), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rgb(X.expand(-1, 3, -1, -1)), expected, rtol=1e-5, atol=1e-5)
    loaded = create_backbone("test_resnet", pretrained=out)
    assert loaded.conv1[0].weight.shape[1] == 1  # a grey stem loads as it is
    torch.testing.assert_close(features(loaded.eval()), expected, rtol=1e-5, atol=1e-5)


def test_stages_a_run_does_not_keep_are_one_line(runs, tmp_path):
    base, tuned, probe_run = runs
    cases = [
        ((tuned, "--stage", "pretext"), "does not keep its pretext-stage backbone"),
        ((probe_run, "--stage", "finetuned"), "never fine-tuned its backbone"),
        ((probe_run, "--fold", "3"), "has no trained fold 3"),
    ]
    for (run, *flags), message in cases:
        result = invoke("export", "--run", run, *flags, "--out", tmp_path / "x.safetensors")
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    wrong = invoke("export", "--run", probe_run, "--out", tmp_path / "x.pth")
    assert wrong.exit_code == 2 and "ends in .safetensors" in wrong.output
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.json").exists()
    assert yaml.safe_load((probe_run / "config.yaml").read_text())["transfer"] == "knn"
