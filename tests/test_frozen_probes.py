"""Frozen evaluation (transfers ``linear`` and ``knn``): the probe's probabilities are
scikit-learn's on the same features, the classifier rebuilt from its model.pt record gives the
same probabilities, the backbone stays frozen, ``run`` works with a label fraction, and the linear
probe's C is chosen by cross-validation within the training fold, grouped by patient."""
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ssl_bench.cli import main
from ssl_bench.errors import ToolkitWarning
from ssl_bench.experiment.model_file import model_record
from ssl_bench.models.classifiers import build_classifier
from ssl_bench.registry import TRANSFERS
from ssl_bench.testing import check_transfer
from ssl_bench.testing.transfers import tiny_fit_context
from ssl_bench.transfer import frozen
from ssl_bench.transfer.logistic import DEFAULT_CS, FALLBACK_C, choose_C

X = torch.rand(5, 1, 64, 32, generator=torch.Generator().manual_seed(7))


def fitted(name, pretext="simclr", **options):
    torch.manual_seed(0)
    ctx = tiny_fit_context(pretext)
    return ctx, TRANSFERS.create(name, **options).fit(ctx)


def probabilities(model, x=X):
    with torch.no_grad():
        return torch.sigmoid(model.eval()(x).double()).reshape(-1).numpy()


def rebuilt(model, ctx):
    buffer = io.BytesIO()
    torch.save(model_record(ctx.config.model.backbone, ctx.config.data.image_size, model), buffer)
    buffer.seek(0)
    record = torch.load(buffer, weights_only=True)
    fresh = build_classifier(record["backbone"], record["architecture"])
    fresh.load_state_dict(record["state_dict"], strict=True)
    return fresh


@pytest.mark.parametrize("name", ["linear", "knn"])
def test_contract(name):
    check_transfer(name)


def test_linear_probe_is_sklearn():
    ctx, model = fitted("linear")
    scaler, lr = model.fitted
    features = model.features(X).numpy().astype(np.float64)
    expected = lr.predict_proba(scaler.transform(features))[:, 1]
    np.testing.assert_allclose(probabilities(model), expected, atol=1e-6, rtol=0)
    assert lr.class_weight == {0: 1.0, 1: ctx.config.train.pos_weight}  # weighted like the BCE
    np.testing.assert_allclose(probabilities(rebuilt(model, ctx)), expected, atol=1e-6, rtol=0)
    assert model.architecture["name"] == "linear_probe"


def test_knn_probe_is_sklearn():
    ctx, model = fitted("knn", k=3)
    train = model.features(ctx.images.float()).numpy()
    knn = KNeighborsClassifier(n_neighbors=3, metric="cosine").fit(train, ctx.labels.numpy().astype(int))
    expected = np.clip(knn.predict_proba(model.features(X).numpy())[:, 1], 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(probabilities(model), expected, atol=1e-6, rtol=0)
    again = rebuilt(model, ctx)
    assert again.architecture == {**model.architecture}
    np.testing.assert_allclose(probabilities(again), expected, atol=1e-6, rtol=0)
    norms = model.train_features.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_pretext_none_keeps_the_initial_backbone():
    ctx = tiny_fit_context("none")
    torch.manual_seed(0)
    initial = ctx.new_backbone().state_dict()
    torch.manual_seed(0)
    model = TRANSFERS.create("linear").fit(ctx)
    for key, value in initial.items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)  # frozen: nothing moved
    assert not any(p.requires_grad for p in model.parameters())


def test_options_checked():
    with pytest.raises(ValueError):
        TRANSFERS.create("knn", k=0)
    for bad in ({"class_weight": "heavy"}, {"C": 0}, {"Cs": []}, {"Cs": [0.1, -1]}, {"cv_folds": 1}):
        with pytest.raises(ValueError):
            TRANSFERS.create("linear", **bad)


def test_linear_probe_chooses_C_by_patient_grouped_inner_cross_validation():
    """The chosen C is the first of the grid with the best mean ROC AUC over scikit-learn's
    StratifiedGroupKFold splits of the training images by patient, computed here fit by fit, and
    the one GridSearchCV picks with the same groups; a C set by the user is used as it is."""
    torch.manual_seed(0)
    ctx = tiny_fit_context("none", n_images=24)
    ctx.patients = np.array([f"p{(i // 4) * 2 + i % 2}" for i in range(24)])  # 2 views each, one label
    model = TRANSFERS.create("linear").fit(ctx)
    record = ctx.fit_info["linear_probe"]
    X = model.features(ctx.images.float()).numpy().astype(np.float64)
    y = ctx.labels.numpy().astype(int)
    weights = {0: 1.0, 1: ctx.config.train.pos_weight}
    splits = list(StratifiedGroupKFold(n_splits=5).split(X, y, ctx.patients))
    assert all(not set(ctx.patients[a]) & set(ctx.patients[b]) for a, b in splits)  # no patient on both sides
    auc = {}
    with threadpool_limits(limits=1):  # small fits on a shared CPU
        for C in DEFAULT_CS:
            scores = []
            for a, b in splits:
                fit = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight=weights, max_iter=1000))
                scores.append(roc_auc_score(y[b], fit.fit(X[a], y[a]).decision_function(X[b])))
            auc[C] = np.mean(scores)
        search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(class_weight=weights, max_iter=1000)),
                              {"logisticregression__C": list(DEFAULT_CS)}, scoring="roc_auc",
                              cv=StratifiedGroupKFold(n_splits=5)).fit(X, y, groups=ctx.patients)
    best = next(C for C in DEFAULT_CS if auc[C] == max(auc.values()))
    assert (record["C"], record["cv_folds"], record["groups"]) == (best, 5, "patient")
    assert record["cv_auc"] == pytest.approx(auc[best]) and model.fitted[1].C == best
    assert search.best_params_["logisticregression__C"] == best

    fixed = TRANSFERS.create("linear", C=0.5).fit(ctx)
    assert fixed.fitted[1].C == 0.5 and ctx.fit_info["linear_probe"] == {"C": 0.5, "chosen": "fixed (params.linear.C)"}
    one = np.where(y == 1, "m", ctx.patients)  # every malignant image of one patient: nothing to cross-validate
    with pytest.warns(ToolkitWarning, match="fewer than 2 patients of a class"):
        C, record = choose_C(X, y, one, DEFAULT_CS, weights, 1000, 5)
    assert (C, record["chosen"], record["cv_folds"]) == (FALLBACK_C, "fallback", 0)


@pytest.mark.parametrize("transfer", ["linear", "knn"])
def test_run_with_label_fraction(tmp_path, transfer, monkeypatch):
    """The probes run on a label fraction; the linear probe's C is chosen on each fold's training
    subset alone, grouped by its patients (none of the held-out fold's), and is in metrics.json."""
    seen = []
    real = frozen.choose_C

    def recording(features, labels, patients, *args):
        seen.append((len(features), set(patients)))
        return real(features, labels, patients, *args)

    monkeypatch.setattr(frozen, "choose_C", recording)
    result = CliRunner().invoke(main, ["run", "--pretext", "simclr", "--transfer", transfer, "--label-fraction",
                                       "0.25", "--profile", "smoke", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / f"simclr-{transfer}-f0.25"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["label_fraction"] == 0.25
    folds = pd.read_csv(run / "folds.csv", dtype={"patient_id": str})
    assert len(seen) == (summary["folds"] if transfer == "linear" else 0)
    for k in range(summary["folds"]):
        metrics = json.loads((run / "folds" / str(k) / "metrics.json").read_text())
        assert metrics["label_fraction"] == 0.25 and metrics["n_train_images"] > 0 and metrics["n_train_patients"] > 0
        assert (run / "folds" / str(k) / "model.pt").is_file()
        if transfer == "linear":
            n, patients = seen[k]
            assert n == metrics["n_train_images"] and len(patients) == metrics["n_train_patients"]
            assert patients <= set(folds.loc[folds["fold"] != k, "patient_id"])
            assert not patients & set(folds.loc[folds["fold"] == k, "patient_id"])
            chosen = metrics["fit"]["linear_probe"]
            assert chosen["C"] in DEFAULT_CS and chosen["groups"] == "patient" and chosen["chosen"] in (
                "inner cross-validation", "fallback")


@pytest.mark.parametrize("k", [3, 50])
def test_knn_training_scores_are_leave_one_out(k):
    """The training scores the fold's operating point is chosen on: each training image scored by
    scikit-learn's KNeighbors fitted on the training set minus that image (never its own neighbour;
    k larger than the training set minus one: all the others)."""
    ctx, model = fitted("knn", k=k)
    train = model.features(ctx.images.float()).numpy()
    labels = ctx.labels.numpy().astype(int)
    expected = []
    for i in range(len(labels)):
        rest = np.arange(len(labels)) != i
        knn = KNeighborsClassifier(n_neighbors=min(k, rest.sum()), metric="cosine").fit(train[rest], labels[rest])
        proba = knn.predict_proba(train[i : i + 1])[0]
        expected.append(proba[list(knn.classes_).index(1)] if 1 in knn.classes_ else 0.0)
    expected = np.clip(expected, 1e-7, 1 - 1e-7)
    scores = TRANSFERS.create("knn", k=k).training_scores(model, ctx, batch_size=4)
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
    assert not np.allclose(scores, probabilities(model, ctx.images.float()))  # not the image among its neighbours


def test_linear_training_scores_are_its_scores():
    ctx, model = fitted("linear")
    scores = TRANSFERS.create("linear").training_scores(model, ctx, batch_size=4)
    np.testing.assert_allclose(scores, probabilities(model, ctx.images.float()), atol=1e-6, rtol=0)
