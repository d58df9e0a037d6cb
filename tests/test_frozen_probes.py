"""Frozen evaluation (transfers ``linear`` and ``knn``): the probe's probabilities are
scikit-learn's on the same features, the classifier rebuilt from its model.pt record gives the
same probabilities, the backbone stays frozen, and ``run`` works with a label fraction."""
import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.neighbors import KNeighborsClassifier

from ssl_bench.cli import main
from ssl_bench.experiment.model_file import model_record
from ssl_bench.models.classifiers import build_classifier
from ssl_bench.registry import TRANSFERS
from ssl_bench.testing import check_transfer
from ssl_bench.testing.transfers import tiny_fit_context

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
    with pytest.raises(ValueError):
        TRANSFERS.create("linear", class_weight="heavy")


@pytest.mark.parametrize("transfer", ["linear", "knn"])
def test_run_with_label_fraction(tmp_path, transfer):
    result = CliRunner().invoke(main, ["run", "--pretext", "simclr", "--transfer", transfer, "--label-fraction",
                                       "0.25", "--profile", "smoke", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / f"simclr-{transfer}-f0.25"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["label_fraction"] == 0.25
    for k in range(summary["folds"]):
        metrics = json.loads((run / "folds" / str(k) / "metrics.json").read_text())
        assert metrics["label_fraction"] == 0.25 and metrics["n_train_images"] > 0 and metrics["n_train_patients"] > 0
        assert (run / "folds" / str(k) / "model.pt").is_file()


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
