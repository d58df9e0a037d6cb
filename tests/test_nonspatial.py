"""The non-spatial baseline (transfer ``nonspatial``, Table II row "Non-spatial"): its features,
that the module reproduces scikit-learn's ``predict_proba``, that it sees the class exactly when the
class is in the intensity histogram, the transfer contract with the model.pt reload, and a run
whose ``model.pt`` (version 2, with ``architecture``) ``ssl-bench predict`` rebuilds."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import roc_auc_score

from ssl_bench import components
from ssl_bench.cli import main
from ssl_bench.config import build_config, config_from_dict
from ssl_bench.data.loading import load_dataset
from ssl_bench.errors import ConfigError, UserError
from ssl_bench.experiment.inference import load_fold_models
from ssl_bench.experiment.rundir import MODEL_VERSION, RunDir, load_model_record, model_record
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.classifiers import build_classifier
from ssl_bench.models.nonspatial import PERCENTILES, NonSpatialClassifier
from ssl_bench.registry import PRETEXTS, TRANSFERS
from ssl_bench.testing import check_transfer
from ssl_bench.training.context import FitContext
from ssl_bench.training.scoring import predict_scores
from ssl_bench.transfer.nonspatial import NonSpatial, image_features

SIZE = (32, 16)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def breast_images(levels: np.ndarray, seed: int, size=SIZE, spread: float = 0.1) -> torch.Tensor:
    """One image per entry of ``levels``: a half-ellipse of tissue at the left edge with
    intensities around the level, dim background noise (< 0.03) elsewhere; float16 (N,1,H,W)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 <= 1
    out = []
    for level in levels:
        img = np.where(tissue, level + spread * rng.standard_normal((h, w)), 0.03 * rng.random((h, w)))
        out.append(np.clip(img, 0, 1))
    return torch.from_numpy(np.stack(out)[:, None]).half()


def fit_context(images: torch.Tensor, labels: np.ndarray) -> FitContext:
    cfg = build_config("smoke", flags={"device": "cpu", "pretext": "none", "transfer": "nonspatial",
                                       "data.image_size": tuple(images.shape[-2:])})
    return FitContext(config=cfg, pretext=PRETEXTS.create("none"), images=images,
                      labels=torch.as_tensor(labels, dtype=torch.float32), device=torch.device("cpu"))


# ------------------------------------------------------------------------------ features
def test_features_are_the_documented_histogram_and_statistics():
    x = breast_images(np.array([0.45, 0.6]), seed=0)
    model = NonSpatialClassifier(bins=8, threshold=0.05)
    feats = model.features(x).numpy()
    assert feats.shape == (2, model.num_features) == (2, 8 + 4 + len(PERCENTILES) + 1)
    assert feats.dtype == np.float64 and len(model.feature_names) == model.num_features
    for img, f in zip(x[:, 0].double().numpy(), feats):
        breast = img[img > 0.05]
        hist = np.histogram(breast, bins=np.linspace(0.05, 1, 9))[0] / breast.size  # no value on an edge
        want = [*hist, breast.mean(), breast.std(), stats.skew(breast), stats.kurtosis(breast),
                *np.percentile(breast, PERCENTILES), breast.size / img.size]
        np.testing.assert_allclose(f, want, rtol=1e-9, atol=1e-12)
    assert feats[:, :8].sum(axis=1) == pytest.approx([1.0, 1.0])


def test_features_of_a_float32_image_are_those_of_its_float16_copy():
    """``ssl-bench predict`` preprocesses to float32; the run used the float16 cache."""
    x32 = torch.rand(3, 1, *SIZE, generator=torch.Generator().manual_seed(1))
    model = NonSpatialClassifier()
    assert torch.equal(model.features(x32), model.features(x32.half()))
    empty = model.features(torch.zeros(1, 1, *SIZE))
    assert torch.isfinite(empty).all() and empty[0, -1] == 0  # no breast: area 0, finite features


# --------------------------------------------------------------- the module is the sklearn model
def test_module_reproduces_predict_proba_of_the_fitted_model():
    labels = np.arange(40) % 2
    levels = 0.5 + 0.05 * labels + 0.08 * np.random.default_rng(3).standard_normal(40)
    ctx = fit_context(breast_images(levels, seed=3), labels)
    classifier = NonSpatial(C=0.5).fit(ctx)
    scaler, lr = classifier.fitted
    assert lr.C == 0.5 and lr.class_weight == {0: 1.0, 1: ctx.config.train.pos_weight}
    new = breast_images(0.4 + 0.3 * np.random.default_rng(4).random(25), seed=4)
    want = lr.predict_proba(scaler.transform(image_features(classifier, new)))[:, 1]
    got = predict_scores(classifier, new, torch.device("cpu"), batch_size=7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert classifier(new.float()).shape == (25, 1) and classifier(new.float()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as predict_scores on CUDA: autocast stays off inside
        np.testing.assert_allclose(torch.sigmoid(classifier(new.float())).reshape(-1).numpy(), want, atol=1e-6)


def test_class_weight_options():
    assert NonSpatial(class_weight="balanced").weights(15.0) == "balanced"
    assert NonSpatial(class_weight="none").weights(15.0) is None
    for bad in ({"class_weight": "heavy"}, {"C": 0.0}, {"bins": 0}, {"threshold": 1.0}):
        with pytest.raises(ConfigError, match="cannot build 'nonspatial'"):
            components.build(TRANSFERS, "nonspatial", bad)


# --------------------------------------------------------------------------- honesty of the probe
def test_sees_the_class_when_it_is_in_the_histogram():
    """Malignant images brighter: the probe separates new images (AUC > 0.9)."""
    rng = np.random.default_rng(5)
    train_y, test_y = np.arange(60) % 2, np.arange(60) % 2
    level = lambda y: 0.45 + 0.12 * y + 0.04 * rng.standard_normal(y.size)
    classifier = NonSpatial().fit(fit_context(breast_images(level(train_y), seed=5), train_y))
    scores = predict_scores(classifier, breast_images(level(test_y), seed=6), torch.device("cpu"))
    assert roc_auc_score(test_y, scores) > 0.9


def test_blind_when_the_class_is_only_in_where_pixels_are():
    """Every image holds the same pixel values; malignant ones gather the brightest into one
    square, benign ones scatter them. Identical histograms: the same probability for every image
    (AUC 0.5 up to float rounding of the moments), while the class is plainly in the pixels."""
    rng = np.random.default_rng(7)
    h, w = SIZE
    base = np.sort(np.clip(0.5 + 0.15 * rng.standard_normal(h * w), 0.06, 1.0))
    labels = np.arange(48) % 2
    imgs = []
    for y in labels:
        img = rng.permutation(base).reshape(h, w)
        if y:  # the 64 brightest values into an 8x8 square, the rest scattered
            top = base[-64:]
            rest = rng.permutation(base[:-64])
            img = np.empty((h, w))
            mask = np.zeros((h, w), bool)
            mask[4:12, 4:12] = True
            img[mask], img[~mask] = rng.permutation(top), rest
        imgs.append(img)
    images = torch.from_numpy(np.stack(imgs)[:, None]).half()
    classifier = NonSpatial().fit(fit_context(images[:24].clone(), labels[:24]))
    scores = predict_scores(classifier, images, torch.device("cpu"))  # 24 new images, 24 seen
    assert scores.max() - scores.min() < 1e-6
    assert abs(roc_auc_score(labels[24:], scores[24:]) - 0.5) < 0.2
    # the square is spatial information a convolution sees at once
    square = images[:, 0, 4:12, 4:12].float().mean(dim=(1, 2)).numpy()
    assert roc_auc_score(labels, square) == 1.0


# ------------------------------------------------------------------- contract and model.pt reload
def test_accepts_only_the_none_pretext():
    transfer = NonSpatial()
    assert transfer.accepts == ("none",) and transfer.needs == ()
    transfer.check("none", PRETEXTS.create("none"))
    for name in ("gsim", "simclr", "context_restoration"):
        with pytest.raises(ConfigError, match=f"transfer 'nonspatial' cannot use pretext '{name}'"):
            transfer.check(name, PRETEXTS.create(name))


def rebuild_through_model_pt(classifier: torch.nn.Module, tmp_path) -> torch.nn.Module:
    """What a run and ``ssl-bench predict`` do: model_record -> torch.save -> load_model_record ->
    build_classifier -> load_state_dict(strict)."""
    path = tmp_path / "model.pt"
    torch.save(model_record("test_resnet", SIZE, classifier), path)
    record = load_model_record(path)
    fresh = build_classifier(record["backbone"], record["architecture"], record["in_chans"], record["num_classes"])
    fresh.load_state_dict(record["state_dict"], strict=True)
    return fresh.eval()


def test_contract_helper_reloads_it_through_model_pt(tmp_path):
    """``check_transfer`` rebuilds every classifier from its model.pt record, so a non-timm
    classifier meets the same contract as the deep ones."""
    trained = check_transfer("nonspatial")
    assert list(trained) == ["none"]
    classifier = trained["none"]
    x = torch.rand(5, 1, 64, 32, generator=torch.Generator().manual_seed(9))
    fresh = rebuild_through_model_pt(classifier, tmp_path)
    assert isinstance(fresh, NonSpatialClassifier)
    assert torch.equal(fresh(x), classifier(x))


def test_model_record_version_2_and_older_files(tmp_path):
    ns = NonSpatialClassifier(bins=16)
    record = model_record("test_resnet", SIZE, ns)
    assert MODEL_VERSION == 3 and record["version"] == 3
    assert record["input_norm"] is None  # no timm backbone to normalise the input of (version 3)
    assert record["architecture"] == {"name": "nonspatial", "bins": 16, "threshold": 0.05}
    assert record["backbone"] is None
    timm_record = model_record("test_resnet", SIZE, create_backbone("test_resnet"))
    assert timm_record["architecture"] is None and timm_record["backbone"] == "test_resnet"
    # version 1 and 0 files: no architecture, read as timm backbones
    old = {k: v for k, v in timm_record.items() if k != "architecture"}
    for version in (1, 0):
        data = dict(old, version=version) if version else {k: v for k, v in old.items() if k not in ("format", "version")}
        torch.save(data, tmp_path / f"v{version}.pt")
        loaded = load_model_record(tmp_path / f"v{version}.pt")
        assert loaded["architecture"] is None
        model = build_classifier(loaded["backbone"], loaded["architecture"])
        model.load_state_dict(loaded["state_dict"], strict=True)
    torch.save({k: v for k, v in record.items() if k != "architecture"}, tmp_path / "v2-broken.pt")
    with pytest.raises(UserError, match="missing architecture"):
        load_model_record(tmp_path / "v2-broken.pt")
    with pytest.raises(UserError, match="unknown classifier architecture 'bogus'"):
        build_classifier(None, {"name": "bogus"})
    with pytest.raises(UserError, match="cannot build classifier 'nonspatial'"):
        build_classifier(None, {"name": "nonspatial", "depth": 3})


# ------------------------------------------------------------------------ runs and ssl-bench predict
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nonspatial")
    result = invoke("run", "--pretext", "none", "--transfer", "nonspatial", "--profile", "smoke", "--out", out,
                    "--quiet")
    assert result.exit_code == 0, result.output
    return out / "none-nonspatial"


def test_smoke_run_fold_aucs_are_computed_like_every_methods(smoke_run):
    """On the smoke synthetic data: metrics.json and summary.json from predictions.csv as for any
    method, and the saved model.pt rescoring the held-out images gives predictions.csv again."""
    rundir = RunDir.open(smoke_run)
    cfg = config_from_dict(rundir.read_config())
    loaded = load_dataset(cfg)
    folds = rundir.read_folds()
    assert (folds["image_id"].to_numpy() == loaded.samples["image_id"].to_numpy()).all()
    _, models = load_fold_models(smoke_run)
    assert [k for k, _ in models] == list(range(5))
    aucs = []
    for k, model in models:
        assert isinstance(model, NonSpatialClassifier)
        record = rundir.read_model(k)
        assert record["version"] == MODEL_VERSION and record["architecture"]["name"] == "nonspatial"
        preds = rundir.read_predictions(k)
        metrics = rundir.read_metrics(k)
        assert metrics["auc"] == pytest.approx(roc_auc_score(preds["label"], preds["score"]))
        aucs.append(metrics["auc"])
        held_out = torch.from_numpy(loaded.images[(folds["fold"] == k).to_numpy()]).unsqueeze(1)
        rescored = predict_scores(model, held_out, torch.device("cpu"))
        np.testing.assert_allclose(rescored, preds["score"].to_numpy(), rtol=1e-12, atol=0)
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["mean"]["auc"] == pytest.approx(np.mean(aucs))
    assert 0.0 <= summary["oof_auc"] <= 1.0


def test_predict_gives_the_runs_own_probabilities(tmp_path):
    """A run on a generated INbreast tree (DICOM), then ``ssl-bench predict`` on the same files:
    each fold's model gives each held-out image the probability in that fold's predictions.csv."""
    tree = tmp_path / "tree"
    cohort = ["--set", "params.synthetic.n_patients=8", "--set", "params.synthetic.n_benign=12",
              "--set", "params.synthetic.n_malignant=6"]
    made = invoke("data", "synth", "--format", "dicom", "--out", tree, "--image-size", "96x48", "--seed", "3", *cohort)
    assert made.exit_code == 0, made.output
    run = invoke("run", "--dataset", "inbreast", "--data-root", tree, "--pretext", "none", "--transfer", "nonspatial",
                 "--profile", "smoke", "--folds", "2", "--out", tmp_path / "runs", "--quiet")
    assert run.exit_code == 0, run.output
    run_dir = tmp_path / "runs" / "none-nonspatial"
    dicoms = sorted((tree / "AllDICOMs").glob("*.dcm"))
    out = tmp_path / "scores.csv"
    result = invoke("predict", "--run", run_dir, *dicoms, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    table["image_id"] = [p.split("/")[-1].split("_")[0] for p in table["file"]]
    compared = 0
    for k in (0, 1):
        preds = RunDir(run_dir).read_predictions(k).merge(table, on="image_id")
        assert len(preds) == len(RunDir(run_dir).read_predictions(k))
        np.testing.assert_allclose(preds[f"fold_{k}"], preds["score"], rtol=0, atol=1e-6)
        compared += len(preds)
    assert compared == len(dicoms)

    # an architecture this ssl-bench does not know: one error line
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    path = broken / "folds" / "0" / "model.pt"
    record = torch.load(path, weights_only=True)
    torch.save(dict(record, architecture={"name": "bogus"}), path)
    bad = invoke("predict", "--run", broken, dicoms[0])
    assert bad.exit_code == 2 and "unknown classifier architecture 'bogus'" in bad.output
    assert "Traceback" not in bad.output
