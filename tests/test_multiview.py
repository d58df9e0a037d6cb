"""The multiview transfer (issue 26, item 5): pairing a breast's views from hand-made tables, the
fused classifier against its parts computed separately, smoke runs on the phantom (with and
without a pretext stage) and on a generated INbreast tree with one-view breasts, counted against a
pandas count of the tables, the breast AUC against scikit-learn, and predict on a multiview run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from _trees import build_cbis, build_vindr
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import roc_auc_score

from ssl_bench.benchmark import plan_benchmark
from ssl_bench.cli import main
from ssl_bench.data.breasts import check_breasts_in_one_fold, partner_index, table_view_pairs, view_pairs
from ssl_bench.data.cbis_ddsm import CBISDDSM
from ssl_bench.data.vindr import VinDrMammo
from ssl_bench.errors import DataError
from ssl_bench.experiment.inference import load_files, load_fold_models
from ssl_bench.models.backbones import pooled_features
from ssl_bench.models.multiview import MultiViewFusion
from ssl_bench.registry import TRANSFERS
from ssl_bench.testing import ContractError, check_transfer, isolated_registries
from ssl_bench.transfer.multiview import MultiView

MULTIVIEW = Path(__file__).resolve().parents[1] / "benchmarks" / "multiview.yaml"
SMALL_PHANTOM = [
    "--set",
    "params.synthetic.n_patients=8",
    "--set",
    "params.synthetic.n_benign=12",
    "--set",
    "params.synthetic.n_malignant=6",
]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ---------------------------------------------------------------------------------- pairing


def test_partners_of_a_hand_made_table():
    table = pd.DataFrame(
        [
            ("P1", "L", "CC"),
            ("P1", "L", "MLO"),  # 0, 1: both views
            ("P1", "R", "CC"),  # 2: one view
            ("P2", "", "CC"),
            ("P2", "", "MLO"),  # 3, 4: no laterality, a breast each
            ("P3", "L", "CC"),
            ("P3", "L", "cc "),
            ("P3", "L", "mlo"),  # 5, 6, 7: two CC, one MLO
            ("P3", "L", "ML"),  # 8: another view
            ("p1", "L", "MLO"),  # 9: another patient than P1
        ],
        columns=["patient_id", "laterality", "view"],
    )
    partners = partner_index(table["patient_id"], table["laterality"], table["view"])
    assert partners.tolist() == [1, 0, -1, -1, -1, 7, -1, 5, -1, -1]
    pairs = view_pairs(table["patient_id"], table["laterality"], table["view"])
    # breasts: P1 L, P1 R, P2 (row 3), P2 (row 4), P3 L, p1 L; P1 L and P3 L have a pair
    assert pairs.counts() == {"two_view_breasts": 2, "one_view_breasts": 4, "images": 10}
    units = sorted(zip(pairs.cc.tolist(), pairs.mlo.tolist()))
    assert units == sorted([(0, 1), (2, -1), (3, -1), (-1, 4), (5, 7), (6, -1), (-1, 8), (-1, 9)])


def test_missing_values_are_unknown_laterality_and_view():
    patients = pd.Series(["A", "A", "A", "A"], dtype="string")
    sides = pd.Series(["L", pd.NA, "L", "L"], dtype="string")
    # row 1 has no laterality: a breast of its own; row 3 no view: a one-view unit of breast A L
    assert partner_index(patients, sides, ["CC", "MLO", "MLO", np.nan]).tolist() == [2, -1, 0, -1]


def test_breast_labels_and_scores_by_hand():
    pairs = view_pairs(["A", "A", "A", "B"], ["L", "L", "L", "R"], ["CC", "MLO", "CC", "MLO"])
    # units of breast A: (0, 1) and (2, -); breast B: (-, 3)
    unit_of = {(c, m): u for u, (c, m) in enumerate(zip(pairs.cc.tolist(), pairs.mlo.tolist()))}
    scores = np.zeros(pairs.n_units)
    scores[unit_of[(0, 1)]], scores[unit_of[(2, -1)]], scores[unit_of[(-1, 3)]] = 0.2, 0.6, 0.9
    assert np.allclose(pairs.image_scores(scores), [0.4, 0.4, 0.4, 0.9])  # A: (0.2 + 0.6) / 2
    labels = pairs.unit_labels([0, 0, 1, 0])  # breast A is malignant through image 2
    assert labels[unit_of[(0, 1)]] == 1 and labels[unit_of[(2, -1)]] == 1 and labels[unit_of[(-1, 3)]] == 0


def test_a_breast_in_two_folds_is_one_line():
    check_breasts_in_one_fold(np.array([0, 0, 1, 1]), ["A", "A", "A", "A"], ["L", "L", "R", ""])
    with pytest.raises(DataError, match="breast A L has images in folds 0 and 1"):
        check_breasts_in_one_fold(np.array([0, 1]), ["A", "A"], ["L", "L"])


@pytest.mark.parametrize("dataset, build", [(CBISDDSM, build_cbis), (VinDrMammo, build_vindr)])
def test_real_layout_loaders_give_both_kinds_of_breast(dataset, build, tmp_path):
    build(tmp_path)
    table, problems = dataset(
        root=str(tmp_path), image_size=(64, 32), cache_dir=str(tmp_path / "cache"), workers=1, on_bad_image="fail"
    ).scan()
    assert not problems
    counts = table_view_pairs(table).counts()
    assert counts == counted(table)
    assert counts["two_view_breasts"] > 0 and counts["one_view_breasts"] > 0


# --------------------------------------------------------------------------- fused classifier


def test_fused_logit_is_the_head_on_each_views_features():
    torch.manual_seed(0)
    model = MultiViewFusion("test_resnet").eval()
    with torch.no_grad():
        model.missing.normal_()  # a trained embedding, not the zeros it starts from
    cc, mlo = torch.rand(3, 1, 64, 32), torch.rand(3, 1, 64, 32)

    def features(x):
        with torch.no_grad():
            return pooled_features(model.backbone, model.backbone.forward_features(x))

    w, b = model.head.weight.detach()[0], model.head.bias.detach()[0]
    f_cc, f_mlo = features(cc), features(mlo)
    expected = torch.cat([f_cc, f_mlo], 1) @ w + b
    with torch.no_grad():
        fused = model(torch.cat([cc, mlo], 1))[:, 0]
        one_view = model(torch.cat([cc, torch.zeros_like(mlo)], 1))[:, 0]
        swapped = model(torch.cat([mlo, cc], 1))[:, 0]
    assert torch.allclose(fused, expected, atol=1e-5)
    assert torch.allclose(one_view, torch.cat([f_cc, model.missing[1].detach().expand_as(f_mlo)], 1) @ w + b, atol=1e-5)
    assert not torch.allclose(swapped, fused, atol=1e-4)  # view-aware: which image is the CC matters
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        model(cc)


def test_the_contract_catches_a_transfer_that_hides_its_view_pairs():
    class Undeclared(MultiView):
        """Trains a view-fused classifier but does not say so."""

        takes_view_pairs = False

    check_transfer("multiview", pretexts=["none"])
    with isolated_registries():
        TRANSFERS.register("undeclared_demo", Undeclared)
        with pytest.raises(ContractError, match="takes_view_pairs"):
            check_transfer("undeclared_demo", pretexts=["none"])


# ------------------------------------------------------------------------------- smoke runs


def breast_views(subgroups: pd.DataFrame) -> pd.DataFrame:
    """Per (patient, laterality): whether the breast has both a CC and an MLO image, by pandas."""
    seen = subgroups.assign(cc=subgroups["view"] == "CC", mlo=subgroups["view"] == "MLO")
    per = seen.groupby(["patient_id", "laterality"])[["cc", "mlo"]].any()
    return per.assign(two=per["cc"] & per["mlo"])


def counted(images: pd.DataFrame) -> dict:
    per = breast_views(images)
    return {
        "two_view_breasts": int(per["two"].sum()),
        "one_view_breasts": int((~per["two"]).sum()),
        "images": len(images),
    }


def check_multiview_run(run: Path, folds: list[int]) -> pd.DataFrame:
    """Every held-out image of a breast has the breast's score, each fold's counts are pandas', and
    its breast stage took as many epochs as fine-tuning's steps on the images need over the units."""
    table = pd.read_csv(run / "folds.csv", dtype={"patient_id": str}).merge(
        pd.read_csv(run / "subgroups.csv")[["image_id", "view", "laterality"]], on="image_id"
    )
    assert (table["laterality"].isin(["L", "R"])).all()
    assert not table.duplicated(["patient_id", "laterality", "view"]).any()  # so a breast is one unit
    pooled = []
    for k in folds:
        predictions = pd.read_csv(run / "folds" / str(k) / "predictions.csv", dtype={"patient_id": str})
        spread = predictions.groupby(["patient_id", "laterality"])["score"].agg(lambda s: s.max() - s.min())
        assert (spread < 1e-9).all()
        metrics = json.loads((run / "folds" / str(k) / "metrics.json").read_text())
        fit, train = metrics["fit"], table[table["fold"] != k]
        assert fit["held_out_breasts"] == counted(table[table["fold"] == k])
        assert fit["breasts"] == counted(train)
        units = train.groupby(["patient_id", "laterality"]).ngroups
        assert fit["breast_epochs"] == round(metrics["epochs"] * len(train) / units)
        history = pd.read_csv(run / "folds" / str(k) / "history.csv")
        assert (history["stage"] == "finetune").sum() == fit["breast_epochs"]
        pooled.append(predictions)
    return pd.concat(pooled)


def test_phantom_runs_per_breast_without_and_with_a_pretext(tmp_path):
    out = tmp_path / "runs"
    result = invoke(
        "run", "--pretext", "none", "--transfer", "multiview", "--profile", "smoke", "--folds", "3", "--out", out
    )
    assert result.exit_code == 0, result.output
    run = out / "none-multiview"
    table = pd.read_csv(run / "folds.csv", dtype={"patient_id": str}).merge(
        pd.read_csv(run / "subgroups.csv")[["image_id", "view", "laterality"]], on="image_id"
    )
    whole = counted(table)
    assert whole["two_view_breasts"] > 0 and whole["one_view_breasts"] > 0  # the phantom has both kinds
    line = [t for t in result.output.splitlines() if "one-view breasts" in t]
    assert len(line) == 1 and f"{whole['one_view_breasts']} one-view breasts" in line[0]
    pooled = check_multiview_run(run, [0, 1, 2])
    breasts = pooled.groupby(["patient_id", "laterality"]).agg(label=("label", "max"), score=("score", "first"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pooled"]["breast_auc"] == pytest.approx(roc_auc_score(breasts["label"], breasts["score"]))

    # export: the backbone fine-tuned through the fusion, without the head of its own it never trained;
    # timm loads it as the provenance says and computes the features the fused classifier reads
    exported = invoke("export", "--run", run, "--fold", "0", "--out", tmp_path / "mv.safetensors")
    assert exported.exit_code == 0, exported.output
    provenance = json.loads((tmp_path / "mv.json").read_text())
    assert provenance["stage"] == "finetuned" and provenance["num_classes"] == 0
    spec = provenance["timm"]
    model = timm.create_model(spec["model_name"], pretrained=True, **spec["kwargs"],
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "mv.safetensors"),
                                                          **spec["pretrained_cfg_overlay"])).eval()
    (_, models) = load_fold_models(run)
    fusion = dict(models)[0].eval()
    x = torch.rand(2, 1, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled_features(fusion.backbone, fusion.backbone.forward_features(x)),
                                   rtol=1e-5, atol=1e-5)

    result = invoke(
        "run",
        "--pretext",
        "simclr",
        "--transfer",
        "multiview",
        "--profile",
        "smoke",
        "--folds",
        "3",
        "--fold",
        "0",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    run = out / "simclr-multiview"
    history = pd.read_csv(run / "folds" / "0" / "history.csv")
    assert list(dict.fromkeys(history["stage"])) == ["pretext", "finetune"]
    check_multiview_run(run, [0])

    refused = invoke(
        "run",
        "--transfer",
        "multiview",
        "--profile",
        "smoke",
        "--set",
        "data.split=image",
        "--out",
        tmp_path / "by-image",
    )
    assert refused.exit_code != 0 and "has images in folds" in refused.output
    assert len(refused.output.strip().splitlines()) <= 2  # the profile line, then the error


@pytest.fixture(scope="module")
def inbreast_run(tmp_path_factory):
    """A multiview run on a generated INbreast tree from which two breasts lost their MLO view."""
    base = tmp_path_factory.mktemp("multiview")
    tree = base / "tree"
    made = invoke(
        "data", "synth", "--format", "dicom", "--out", tree, "--image-size", "96x48", "--seed", "3", *SMALL_PHANTOM
    )
    assert made.exit_code == 0, made.output
    sheet = pd.read_csv(tree / "INbreast.csv", sep=";", dtype=str)
    dropped = sheet[sheet["View"] == "MLO"].iloc[:2]
    for name in dropped["File Name"]:
        for path in (tree / "AllDICOMs").glob(f"{name}_*.dcm"):
            path.unlink()
    sheet.drop(index=dropped.index).to_csv(tree / "INbreast.csv", sep=";", index=False)
    result = invoke(
        "run",
        "--dataset",
        "inbreast",
        "--data-root",
        tree,
        "--transfer",
        "multiview",
        "--profile",
        "smoke",
        "--folds",
        "2",
        "--out",
        base / "runs",
        "--set",
        f"data.cache_dir={base / 'cache'}",
    )
    assert result.exit_code == 0, result.output
    return tree, base / "runs" / "none-multiview", result.output


def test_inbreast_tree_counts_its_one_view_breasts(inbreast_run):
    tree, run, output = inbreast_run
    check_multiview_run(run, [0, 1])
    folds = [json.loads((run / "folds" / str(k) / "metrics.json").read_text())["fit"] for k in (0, 1)]
    assert sum(f["held_out_breasts"]["one_view_breasts"] for f in folds) == 2  # the two left without an MLO
    assert "2 one-view breasts" in output


def test_predict_pairs_files_by_their_dicom_tags(inbreast_run, tmp_path):
    tree, run, _ = inbreast_run
    # names are <file>_<patient>_MG_<side>_<view>_ANON; a breast that kept both views
    files = {
        (p.stem.split("_")[1], p.stem.split("_")[3], p.stem.split("_")[4]): p
        for p in (tree / "AllDICOMs").glob("*.dcm")
    }
    patient, side = next(
        (patient, side) for patient, side, view in files if view == "CC" and (patient, side, "ML") in files
    )
    cc, mlo = files[(patient, side, "CC")], files[(patient, side, "ML")]
    png = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((120, 60)) * 65535).astype(np.uint16)).save(png)
    out = tmp_path / "scores.csv"
    result = invoke(
        "predict", "--run", run, cc, mlo, png, "--format", "csv", "--out", out, "--explain", tmp_path / "maps"
    )
    assert result.exit_code == 0, result.output
    assert "lack the DICOM tags" in result.output and "no Grad-CAM overlays" in result.output
    explained = invoke("explain", run)  # a run's overlays: one line, before the data is loaded again
    assert explained.exit_code != 0 and len(explained.output.strip().splitlines()) == 1
    assert "no map of one image" in explained.output
    table = pd.read_csv(out, keep_default_na=False)
    assert table["partner"].tolist() == [str(mlo), str(cc), ""]
    config, models = load_fold_models(run)
    images = load_files([str(cc), str(mlo), str(png)], tuple(config["data"]["image_size"]), lambda text: None)
    for k, model in models:  # the fold model on the stacked views, by hand
        with torch.no_grad():
            pair = torch.sigmoid(model(torch.cat([images[0:1], images[1:2]], 1))).item()
            alone = torch.sigmoid(model(torch.cat([torch.zeros_like(images[2:3]), images[2:3]], 1))).item()
        assert table[f"fold_{k}"].tolist() == pytest.approx([pair, pair, alone], abs=1e-6)


def test_the_multiview_bench_file_plans_finetune_against_multiview(tmp_path):
    plan, _ = plan_benchmark(MULTIVIEW, profile="smoke", flags={"out": str(tmp_path)})
    rows = {c.method: (c.pretext, c.transfer) for c in plan.configs}
    assert rows == {
        "ResNet-finetune": ("none", "finetune"),
        "ResNet-multiview": ("none", "multiview"),
        "SimCLR-finetune": ("simclr", "finetune"),
        "SimCLR-multiview": ("simclr", "multiview"),
    }
    assert plan.baselines == ("ResNet-finetune",)
    assert len({(c.seed, c.data.folds, c.data.split, c.data.dataset, c.data.image_size) for c in plan.configs}) == 1
