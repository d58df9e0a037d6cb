"""The Non-spatial control (transfer ``nonspatial``, Table II row "Non-spatial"): gradient-boosted
trees on the position-free features whose torch module reproduces scikit-learn's
``decision_function`` and ``predict_proba`` (missing values included), that it sees the class when
it is in the histogram or in counts of bright fragments, the options, the transfer contract with
the model.pt reload, the logistic control's older model.pt files still loading, and a run whose
``model.pt`` ``ssl-bench predict`` rebuilds."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from ssl_bench import components
from ssl_bench.cli import main
from ssl_bench.config import build_config, config_from_dict
from ssl_bench.data.loading import load_dataset
from ssl_bench.errors import ConfigError, UserError
from ssl_bench.experiment.inference import load_fold_models
from ssl_bench.experiment.model_file import MODEL_VERSION, load_model_record, model_record
from ssl_bench.experiment.rundir import RunDir
from ssl_bench.models import position_free
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.classifiers import build_classifier
from ssl_bench.models.nonspatial import NonSpatialClassifier
from ssl_bench.models.nonspatial_trees import NonSpatialTreesClassifier
from ssl_bench.registry import PRETEXTS, TRANSFERS
from ssl_bench.testing import check_transfer
from ssl_bench.training.context import FitContext
from ssl_bench.training.scoring import predict_scores
from ssl_bench.transfer.nonspatial import NonSpatial, UnweightedBinsTrees, image_features

SIZE = (32, 16)
N_FEATURES = len(position_free.feature_names())


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


# ------------------------------------------------------------------- the module is the sklearn model
def test_features_are_the_position_free_union_of_the_float16_image():
    """The classifier's features are ``position_free.union`` of the image as the cache stores it
    (float16), so ``ssl-bench predict``'s float32 images give the run's own features."""
    x32 = torch.rand(3, 1, *SIZE, generator=torch.Generator().manual_seed(1))
    model = NonSpatialTreesClassifier()
    feats = model.features(x32)
    assert feats.dtype == torch.float64 and feats.shape == (3, model.num_features) == (3, N_FEATURES)
    want, _ = position_free.union(x32[:, 0].half().float().numpy())
    np.testing.assert_array_equal(feats.numpy(), want)
    assert torch.equal(model.features(x32.half()), feats)


def random_features(n: int, seed: int, missing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, N_FEATURES)`` features whose first three columns carry the class, with a share of
    values missing (NaN) in those columns."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    X = rng.standard_normal((n, N_FEATURES))
    X[:, :3] += labels[:, None] * np.array([1.5, -1.0, 0.8])
    if missing:
        X[:, :3][rng.random((n, 3)) < missing] = np.nan
        X[labels == 1, 2] = np.where(rng.random((labels == 1).sum()) < 0.5, np.nan, X[labels == 1, 2])
    return X, labels


@pytest.mark.parametrize("missing", [0.0, 0.2])
def test_trees_reproduce_decision_function_bit_for_bit(missing):
    """The copied trees against scikit-learn's own prediction on raw features: the same raw score
    (float64, bit for bit, missing values following each split's ``missing_go_to_left``) and
    ``predict_proba`` its sigmoid."""
    X, y = random_features(300, seed=0, missing=missing)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X[:200], y[:200])
    module = NonSpatialTreesClassifier.from_fitted(model)
    assert module.n_trees == 60 and module.architecture["n_nodes"] == max(len(p[0].nodes) for p in model._predictors)
    if missing:
        assert module.missing_go_to_left.any() and (~module.missing_go_to_left & ~module.is_leaf).any()
        assert np.isnan(X[200:]).any()
    raw = module.decision(torch.from_numpy(X[200:])).numpy()
    assert np.array_equal(raw, model.decision_function(X[200:]))
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), model.predict_proba(X[200:])[:, 1], rtol=1e-12)


def test_only_binary_numeric_models_on_the_union_are_copied():
    X, y = random_features(90, seed=1)
    three = HistGradientBoostingClassifier(max_iter=3).fit(X, np.arange(90) % 3)
    with pytest.raises(ValueError, match="binary"):
        NonSpatialTreesClassifier.from_fitted(three)
    narrow = HistGradientBoostingClassifier(max_iter=3).fit(X[:, :5], y)
    with pytest.raises(ValueError, match=f"not the {N_FEATURES} position-free"):
        NonSpatialTreesClassifier.from_fitted(narrow)
    cats = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0], min_samples_leaf=2)
    Xc = X.copy()
    Xc[:, 0] = y * 2 + np.arange(90) % 2
    with pytest.raises(ValueError, match="categorical"):
        NonSpatialTreesClassifier.from_fitted(cats.fit(Xc, y))


def test_weights_weigh_the_loss_not_the_bins():
    """The control's trees bin features on their unweighted quantiles (scikit-learn's own bins
    without weights) while the malignant weight still changes the fit."""
    X, y = random_features(400, seed=2)  # more distinct values than bins: quantiles decide
    w = np.where(y == 1, 15.0, 1.0)
    weighted = UnweightedBinsTrees(max_iter=20).fit(X, y, sample_weight=w)
    plain = HistGradientBoostingClassifier(max_iter=20).fit(X, y)
    for a, b in zip(weighted._bin_mapper.bin_thresholds_, plain._bin_mapper.bin_thresholds_):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(weighted.decision_function(X), plain.decision_function(X))
    np.testing.assert_array_equal(UnweightedBinsTrees(max_iter=20).fit(X, y).decision_function(X),
                                  plain.decision_function(X))


def test_module_reproduces_predict_proba_of_the_fitted_model():
    labels = np.arange(60) % 2
    levels = 0.5 + 0.05 * labels + 0.08 * np.random.default_rng(3).standard_normal(60)
    ctx = fit_context(breast_images(levels, seed=3), labels)
    transfer = NonSpatial(max_iter=40, min_samples_leaf=5)
    classifier = transfer.fit(ctx)
    model = classifier.fitted
    assert isinstance(classifier, NonSpatialTreesClassifier) and classifier.n_trees == 40
    assert model.max_iter == 40 and model.min_samples_leaf == 5 and model.early_stopping is False
    features, _, sample_weight, _ = classifier.fitted_on
    np.testing.assert_array_equal(sample_weight, np.where(labels == 1, ctx.config.train.pos_weight, 1.0))
    new = breast_images(0.4 + 0.3 * np.random.default_rng(4).random(25), seed=4)
    new_features = image_features(classifier, new)
    assert np.array_equal(classifier.decision(torch.from_numpy(new_features)).numpy(),
                          model.decision_function(new_features))
    want = model.predict_proba(new_features)[:, 1]
    got = predict_scores(classifier, new, torch.device("cpu"), batch_size=7)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert classifier(new.float()).shape == (25, 1) and classifier(new.float()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as predict_scores on CUDA: autocast stays off inside
        np.testing.assert_allclose(torch.sigmoid(classifier(new.float())).reshape(-1).numpy(), want, atol=1e-6)


def test_training_scores_are_out_of_fold():
    """Trees all but memorise their training images; the operating point is chosen on scores of
    each training image by trees that did not see it (score_folds), or on the own scores with 0."""
    labels = np.arange(60) % 2
    levels = 0.5 + 0.05 * labels + 0.08 * np.random.default_rng(5).standard_normal(60)
    ctx = fit_context(breast_images(levels, seed=5), labels)
    transfer = NonSpatial(max_iter=40, min_samples_leaf=5)
    classifier = transfer.fit(ctx)
    own = predict_scores(classifier, ctx.images, torch.device("cpu"))
    out_of_fold = transfer.training_scores(classifier, ctx, 16)
    assert out_of_fold.shape == (60,) and np.isfinite(out_of_fold).all()
    assert roc_auc_score(labels, own) > roc_auc_score(labels, out_of_fold)
    np.testing.assert_array_equal(NonSpatial(max_iter=40, min_samples_leaf=5, score_folds=0)
                                  .training_scores(classifier, ctx, 16), own)



def test_out_of_fold_training_scores_keep_a_patients_images_together():
    """With the patients known (``ctx.patients``), no training image is scored by trees fitted on
    another image of its patient (a breast's other view is no new image)."""
    labels = np.repeat(np.arange(30) % 2, 2)  # 30 patients, two views each
    levels = 0.5 + 0.05 * labels + 0.08 * np.random.default_rng(6).standard_normal(60)
    ctx = fit_context(breast_images(levels, seed=6), labels)
    ctx.patients = np.repeat([f"p{i}" for i in range(30)], 2)
    seen = []

    class Recorded(NonSpatial):
        def trees(self, random_state):
            model = super().trees(random_state)
            fit, predict = model.fit, model.predict_proba

            def recording_fit(X, y, sample_weight=None):
                seen.append(("fit", X.copy()))
                return fit(X, y, sample_weight=sample_weight)

            def recording_predict(X):
                seen.append(("predict", X.copy()))
                return predict(X)

            model.fit, model.predict_proba = recording_fit, recording_predict
            return model

    transfer = Recorded(max_iter=20, min_samples_leaf=5)
    classifier = transfer.fit(ctx)
    features = classifier.fitted_on[0]
    seen.clear()
    scores = transfer.training_scores(classifier, ctx, 16)
    assert np.isfinite(scores).all() and len(seen) == 10  # 5 parts: a fit and a scoring each

    def patients_of(X):
        rows = [int(np.flatnonzero((features == x).all(axis=1))[0]) for x in X]
        return set(ctx.patients[rows])

    for (what_fit, trained), (what_score, scored) in zip(seen[::2], seen[1::2]):
        assert (what_fit, what_score) == ("fit", "predict")
        assert patients_of(trained).isdisjoint(patients_of(scored))


def test_options():
    assert NonSpatial(class_weight="balanced").weights(15.0) == "balanced"
    assert NonSpatial(class_weight="none").weights(15.0) is None
    assert NonSpatial().weights(15.0) == {0: 1.0, 1: 15.0}
    for bad in ({"class_weight": "heavy"}, {"max_iter": 0}, {"learning_rate": 0.0}, {"max_leaf_nodes": 1},
                {"min_samples_leaf": 0}, {"l2_regularization": -1.0}, {"score_folds": 1}, {"threshold": 1.0}):
        with pytest.raises(ConfigError, match="cannot build 'nonspatial'"):
            components.build(TRANSFERS, "nonspatial", bad)
    with pytest.raises(ConfigError, match="unknown option 'C' for 'nonspatial'"):  # the logistic control's
        components.build(TRANSFERS, "nonspatial", {"C": 1.0})


# ------------------------------------------------------------------------ honesty of the control
def test_sees_the_class_when_it_is_in_the_histogram():
    """Malignant images brighter: the control separates new images (AUC > 0.9)."""
    rng = np.random.default_rng(5)
    train_y, test_y = np.arange(60) % 2, np.arange(60) % 2
    level = lambda y: 0.45 + 0.12 * y + 0.04 * rng.standard_normal(y.size)
    classifier = NonSpatial().fit(fit_context(breast_images(level(train_y), seed=5), train_y))
    scores = predict_scores(classifier, breast_images(level(test_y), seed=6), torch.device("cpu"))
    assert roc_auc_score(test_y, scores) > 0.9


def fragment_images(labels: np.ndarray, seed: int) -> torch.Tensor:
    """Tissue around 0.45 with six saturated pixels (0.95): scattered, apart from each other, in
    malignant images; one 2x3 block in benign ones. The same histogram either way."""
    rng = np.random.default_rng(seed)
    x = breast_images(np.full(len(labels), 0.45), seed=seed, spread=0.05).float().numpy()
    h, w = SIZE
    for image, y in zip(x[:, 0], labels):
        if y:
            spots: list[tuple[int, int]] = []
            while len(spots) < 6:
                r, c = int(rng.integers(6, h - 6)), int(rng.integers(0, w // 2))
                if all(abs(r - a) > 1 or abs(c - b) > 1 for a, b in spots):
                    spots.append((r, c))
            for r, c in spots:
                image[r, c] = 0.95
        else:
            r, c = int(rng.integers(6, h - 8)), int(rng.integers(0, w // 2 - 3))
            image[r : r + 2, c : c + 3] = 0.95
    return torch.from_numpy(x).half()


def test_sees_the_class_in_counts_of_bright_fragments():
    """The phantom-version-5 shortcut: the same bright pixels, as fragments or as one blob. The
    histogram cannot tell them apart; the control's component and local-maximum counts do."""
    train_y, test_y = np.arange(60) % 2, np.arange(40) % 2
    classifier = NonSpatial().fit(fit_context(fragment_images(train_y, seed=8), train_y))
    scores = predict_scores(classifier, fragment_images(test_y, seed=9), torch.device("cpu"))
    assert roc_auc_score(test_y, scores) > 0.9


def twin_images(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` malignant images and their benign twins, each a malignant image turned by 180
    degrees: tissue symmetric under that turn, a 2x2 square (+0.2) at rows 6-7, columns 4-5 and a
    diagonal pair (+0.4) at the turned place in the malignant image; in the benign twin the pair
    sits where the square was. Same pixel values, same row and column sums at the profiles'
    resolution: the class is only in which lesion is where."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    images = []
    for _ in range(n):
        z = 0.05 * rng.random((h, w))
        image = 0.4 + (z + z[::-1, ::-1]) / 2
        image[6:8, 4:6] += 0.2
        image[h - 8, w - 6] += 0.4
        image[h - 7, w - 5] += 0.4
        images.append(image)
    images += [image[::-1, ::-1] for image in images]
    return torch.from_numpy(np.stack(images)[:, None].copy()).half(), np.repeat([1, 0], n)


def test_blind_to_where_a_lesion_is():
    """Position-free: a malignant image and its benign twin (the same image turned by 180
    degrees) get the same probability, whatever the trees learned (here: brightness), while one
    pixel of the square gives the class away."""
    rng = np.random.default_rng(7)
    train_y = np.arange(60) % 2
    level = 0.45 + 0.12 * train_y + 0.04 * rng.standard_normal(60)
    classifier = NonSpatial().fit(fit_context(breast_images(level, seed=7), train_y))
    twins, labels = twin_images(20, seed=7)
    scores = predict_scores(classifier, twins, torch.device("cpu"))
    np.testing.assert_allclose(scores[:20], scores[20:], rtol=0, atol=1e-6)
    assert roc_auc_score(labels, twins[:, 0, 6, 5].float().numpy()) == 1.0  # a convolution sees it at once


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
    assert isinstance(fresh, NonSpatialTreesClassifier)
    assert torch.equal(fresh(x), classifier(x))


def test_trees_round_trip_through_model_pt(tmp_path):
    """A fitted control saved as model.pt (tensors and plain values only) and rebuilt scores new
    images as the fitted one does, to the bit; a file of other position-free features is refused
    in one line."""
    labels = np.arange(60) % 2
    levels = 0.5 + 0.05 * labels + 0.08 * np.random.default_rng(10).standard_normal(60)
    classifier = NonSpatial(max_iter=30, min_samples_leaf=5).fit(fit_context(breast_images(levels, seed=10), labels))
    record = model_record("test_resnet", SIZE, classifier)
    assert record["backbone"] is None and record["input_norm"] is None
    assert record["architecture"] == {"name": "nonspatial_trees", "threshold": 0.05, "n_trees": 30,
                                      "n_nodes": classifier.n_nodes, "features_version": position_free.FEATURES_VERSION}
    fresh = rebuild_through_model_pt(classifier, tmp_path)
    new = breast_images(0.4 + 0.3 * np.random.default_rng(11).random(9), seed=11)
    assert torch.equal(fresh(new.float()), classifier(new.float()))
    other = dict(record["architecture"], features_version=position_free.FEATURES_VERSION + 1)
    with pytest.raises(UserError, match="cannot build classifier 'nonspatial_trees'.*position-free features of version"):
        build_classifier(None, other)


def test_model_record_version_2_and_older_files(tmp_path):
    """The logistic Non-spatial control of earlier runs (architecture ``nonspatial``) still loads
    and scores as it did; timm files of every version too."""
    ns = NonSpatialClassifier(bins=16)
    rng = np.random.default_rng(12)
    ns.set_linear(rng.random(ns.num_features), 0.5 + rng.random(ns.num_features),
                  rng.standard_normal(ns.num_features), 0.3)
    record = model_record("test_resnet", SIZE, ns)
    assert MODEL_VERSION == 4 and record["version"] == 4
    assert record["input_norm"] is None  # no timm backbone to normalise the input of (version 3 on)
    assert record["architecture"] == {"name": "nonspatial", "bins": 16, "threshold": 0.05}
    assert record["backbone"] is None
    torch.save(record, tmp_path / "logistic.pt")
    loaded = load_model_record(tmp_path / "logistic.pt")
    logistic = build_classifier(loaded["backbone"], loaded["architecture"])
    logistic.load_state_dict(loaded["state_dict"], strict=True)
    x = breast_images(np.array([0.3, 0.5, 0.7]), seed=12).float()
    assert isinstance(logistic, NonSpatialClassifier) and torch.equal(logistic(x), ns(x))
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
        assert isinstance(model, NonSpatialTreesClassifier)
        record = load_model_record(rundir.model_path(k))
        assert record["version"] == MODEL_VERSION and record["architecture"]["name"] == "nonspatial_trees"
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
