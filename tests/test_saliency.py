"""Saliency (Grad-CAM through captum): the maps against Grad-CAM written out from the paper, the
choice of the top true/false positives and false negatives, `ssl-bench explain`, `predict
--explain` and the report's section, and the one-line refusals of classifiers it cannot explain."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from ssl_bench.cli import main
from ssl_bench.experiment.saliency import NoSaliency, grad_cam, overlay_png, top_cases
from ssl_bench.models.frozen_probe import KnnProbeClassifier
from ssl_bench.report.leaderboard import build_report
from ssl_bench.report.publish import write_leaderboard


def paper_grad_cam(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Selvaraju et al. (2017), eq. 1-2, on a timm CNN: the last feature map A (forward_features),
    alpha_c = spatial mean of d logit / d A^c, ReLU(sum_c alpha_c A^c), bilinear to the image,
    each map divided by its maximum."""
    features = model.forward_features(x)
    logit = model.forward_head(features).reshape(-1)
    grads = torch.autograd.grad(logit.sum(), features)[0]
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-30)
    return (cam / peak[:, None, None]).detach().numpy()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_grad_cam_is_the_papers(name):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=1).eval()
    x = torch.rand(3, 1, 128, 96)
    ours = grad_cam(model, x, torch.device("cpu"))
    reference = paper_grad_cam(model, x)
    assert ours.shape == (3, 128, 96)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert ours.max() == pytest.approx(1.0) or ours.max() == 0.0


def test_a_vit_and_a_knn_probe_are_refused_in_one_line():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, in_chans=1, num_classes=1, img_size=(64, 32))
    with pytest.raises(NoSaliency, match="convolutional feature map") as err:
        grad_cam(vit, torch.rand(2, 1, 64, 32), torch.device("cpu"))
    assert "\n" not in str(err.value)
    knn = KnnProbeClassifier("resnet10t", n_train=6, k=3, image_size=(64, 32))
    knn.set_memory(torch.randn(6, knn.num_features), torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(NoSaliency, match="no gradient|gradient"):
        grad_cam(knn, torch.rand(2, 1, 64, 32), torch.device("cpu"))
    with pytest.raises(NoSaliency, match="timm backbone"):
        grad_cam(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64 * 32, 1)), torch.rand(2, 1, 64, 32),
                 torch.device("cpu"))


def test_top_cases_are_the_most_confident_hits_and_mistakes_at_each_folds_threshold():
    predictions = pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e", "f", "g", "h"],
        "patient_id": list("abcdefgh"),
        "label": [1, 1, 0, 0, 1, 1, 0, 1],
        "score": [0.9, 0.6, 0.7, 0.3, 0.2, 0.55, 0.65, 0.1],
        "fold": [0, 1, 0, 1, 0, 1, 1, 0],
    })
    # fold 0 calls at 0.5, fold 1 at 0.6: f (0.55, fold 1) is missed, g (0.65, fold 1) a false alarm
    cases = top_cases(predictions, {0: 0.5, 1: 0.6}, top=2)
    got = {kind: list(rows["image_id"]) for kind, rows in cases.groupby("kind")}
    assert got == {"tp": ["a", "b"], "fp": ["c", "g"], "fn": ["h", "e"]}
    assert list(cases["kind"]) == ["tp", "tp", "fp", "fp", "fn", "fn"] and list(cases["rank"]) == [1, 2] * 3


def test_an_overlay_is_a_png_of_the_asked_height_red_where_the_map_is_high():
    image = np.full((64, 32), 0.5)
    cam = np.zeros((64, 32))
    cam[:16, :16] = 1.0
    picture = np.asarray(Image.open(io.BytesIO(overlay_png(image, cam, height=128))).convert("RGB"))
    assert picture.shape == (128, 64, 3)
    hot, cold = picture[10, 10].astype(int), picture[100, 50].astype(int)
    assert hot[0] > hot[2] + 40 and abs(cold[0] - cold[2]) <= 2  # jet's red over the map, gray elsewhere


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("saliency")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--folds", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "none-finetune"


def test_explain_writes_the_overlays_the_report_shows(run, tmp_path):
    result = CliRunner().invoke(main, ["explain", str(run), "--top", "2"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run / "saliency" / "saliency.csv", dtype={"image_id": str})
    folds = pd.read_csv(run / "folds.csv", dtype={"image_id": str}).set_index("image_id")
    for row in table.itertuples():
        assert (run / row.file).is_file()
        assert folds.at[row.image_id, "fold"] == row.fold  # explained by the model that held it out
        called = row.score >= row.threshold
        assert {"tp": row.label == 1 and called, "fp": row.label == 0 and called,
                "fn": row.label == 1 and not called}[row.kind]
    board = write_leaderboard(build_report([run]), tmp_path / "board")
    html = board["html"].read_text()
    assert "<h2>Saliency</h2>" in html and html.count("Grad-CAM overlay") == len(table)
    assert "## Saliency" in board["md"].read_text()
    bad = CliRunner().invoke(main, ["explain", str(run), "--top", "0"])
    assert bad.exit_code == 2 and "--top must be at least 1" in bad.output


def test_predict_explain_writes_an_overlay_per_file(run, tmp_path):
    files = []
    for i, name in enumerate(["a/scan.png", "b/scan.png", "other.png"]):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((np.random.default_rng(i).random((64, 32)) * 255).astype(np.uint8)).save(path)
        files.append(str(path))
    result = CliRunner().invoke(main, ["predict", "--run", str(run), *files, "--format", "csv",
                                       "--explain", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert [p.split("/")[-1] for p in table["explanation"]] == ["0-scan.gradcam.png", "1-scan.gradcam.png",
                                                                "other.gradcam.png"]
    for path in table["explanation"]:
        assert Image.open(path).size == (32, 64)
