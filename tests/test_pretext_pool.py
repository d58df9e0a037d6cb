"""Pretraining on a pool (``--pretext-data``): the ``folder`` dataset, the held-out fold's patients
left out of the pool, the pretext stage trained once and reused by every fold and label fraction
(with the same results as training it), and the one-line errors."""
import inspect
import json
import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import yaml
import lightly
import timm
import torch
from click.testing import CliRunner
from PIL import Image

from _dicom_factory import make_dicom
from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.data import synthetic_mammo
from ssl_bench.data.folder import ImageFolder
from ssl_bench.data.synthetic import SyntheticPool
from ssl_bench.data.loading import load_evaluation_data
from ssl_bench.data.pool import pool_keep_mask
from ssl_bench.data.preprocess import preprocess_file
from ssl_bench.experiment.model_file import load_model_record
from ssl_bench.experiment.pretext_pool import fold_pretext_pool, stage_key
from ssl_bench.experiment.provenance import PACKAGE, source_digest
from ssl_bench.experiment.run import compute_folds
from ssl_bench.models.backbone_file import read_provenance
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.classifiers import classifier_from_record
from ssl_bench.registry import PRETEXTS
from ssl_bench.training.pretext_cache import CHECKPOINT_FORMAT
from ssl_bench.training import stages

SIZE = (64, 32)


def table(rows):
    return pd.DataFrame(rows, columns=["patient_id", "path"])


# ------------------------------------------------------------------------------ pool exclusion


def test_keep_mask_matching_patients_drops_held_out_patients():
    pool = table([("p1", ""), ("p2", ""), ("p1", ""), ("p3", "")])
    held = table([("p1", ""), ("p9", "")])
    assert pool_keep_mask(pool, held, match_patients=True).tolist() == [False, True, False, True]
    # a pool whose ids name no patient of the evaluation dataset (a folder's, made from paths)
    assert pool_keep_mask(pool, held, match_patients=False).tolist() == [True, True, True, True]


def test_keep_mask_shared_file_drops_its_pool_patient(tmp_path):
    files = [tmp_path / f"{n}.png" for n in "abcd"]
    for f in files:
        f.write_bytes(b"x")
    # a folder pool over the evaluation files: 'a' is held out, so pool patient 'A' (a, b) goes
    pool = table([("A", str(files[0])), ("A", str(files[1])), ("C", str(files[2])), ("D", str(files[3]))])
    held = table([("p1", str(tmp_path / "." / "a.png"))])  # the same file under another spelling
    assert pool_keep_mask(pool, held, match_patients=False).tolist() == [False, False, True, True]


def test_pool_is_the_evaluation_dataset_minus_the_held_out_fold(tmp_path):
    cfg = build_config("smoke", flags={"device": "cpu", "pretext": "simclr", "transfer": "knn",
                                       "data.folds": 3, "pretext_data.dataset": "synthetic",
                                       "out": str(tmp_path)})
    loaded = load_evaluation_data(cfg)
    fold_of = compute_folds(cfg, loaded)
    pretext = PRETEXTS.create("simclr")
    keys = set()
    for k in range(3):
        pool = fold_pretext_pool(cfg, pretext, loaded, fold_of, k, torch.device("cpu"), None)
        images, _ = pool.load()
        train = fold_of != k
        assert pool.info["n_images"] == int(train.sum()) and pool.info["n_excluded"] == int((~train).sum())
        held_patients = set(loaded.groups[~train])
        assert held_patients and not held_patients & set(loaded.groups[train])
        # exactly the training folds' images, in order: no held-out patient's image
        np.testing.assert_array_equal(images[:, 0].numpy(), loaded.images[train])
        keys.add(pool.key)
    assert len(keys) == 3  # each fold its own pool, hence its own pretext stage


def test_synthetic_pool_is_unlabelled_disjoint_and_shared_by_every_fold(tmp_path):
    """``--pretext-data synthetic_pool``: phantom images drawn like the evaluation set's from
    another seed, under their own patients, without labels; no fold excludes any of them, so
    every fold pretrains on the same pool (one stage, cached once)."""
    cfg = build_config("smoke", flags={"device": "cpu", "pretext": "simclr", "transfer": "knn",
                                       "data.folds": 3, "pretext_data.dataset": "synthetic_pool",
                                       "params.synthetic_pool": {"n_patients": 10, "n_benign": 16, "n_malignant": 6},
                                       "out": str(tmp_path)})
    loaded = load_evaluation_data(cfg)
    fold_of = compute_folds(cfg, loaded)
    pretext = PRETEXTS.create("simclr")
    pools = [fold_pretext_pool(cfg, pretext, loaded, fold_of, k, torch.device("cpu"), None) for k in range(3)]
    assert len({pool.key for pool in pools}) == 1
    images, labels = pools[0].load()
    assert pools[0].info["n_images"] == 22 and pools[0].info["n_excluded"] == 0
    assert (labels.numpy() == -1).all()
    pool = SyntheticPool(image_size=(64, 32), cache_dir=str(tmp_path), n_patients=10, n_benign=16, n_malignant=6).load()
    assert not set(pool.samples["patient_id"]) & set(loaded.samples["patient_id"])
    # drawn as the evaluation set is drawn, not a copy of it: same size and value range, other pixels
    assert images.shape[1:] == (1, 64, 32) and not np.array_equal(images[:, 0].numpy()[:20], loaded.images[:20])


def test_stage_key_follows_what_the_stage_depends_on(tmp_path):
    def key(keep=None, **flags):
        cfg = build_config("smoke", flags={"device": "cpu", "pretext": "simclr", "transfer": "finetune",
                                           "pretext_data.dataset": "synthetic", **flags})
        pool = load_evaluation_data(cfg)
        mask = np.ones(len(pool.samples), bool) if keep is None else keep
        return stage_key(cfg, PRETEXTS.create("simclr", **cfg.component_params("simclr")), pool, mask,
                         torch.device("cpu"), None)

    base = key()
    # what only the downstream stage reads shares the stage
    for same in ({"train.epochs": 7}, {"train.pos_weight": 3.0}, {"data.label_fraction": 0.25},
                 {"transfer": "knn"}, {"out": str(tmp_path)}, {"train.checkpoint_every": 5}):
        assert key(**same) == base, same
    fewer = np.ones(60, bool)
    fewer[0] = False
    for other in ({"train.pretext_epochs": 3}, {"train.lr": 0.01}, {"seed": 1}, {"params.simclr.temperature": 0.2},
                  {"model.pretrained": "imagenet"}, {"data.image_size": "96x48"}):
        assert key(**other) != base, other
    assert key(keep=fewer) != base


def simclr_key(cfg, pool) -> str:
    pretext = PRETEXTS.create("simclr", **cfg.component_params("simclr"))
    return stage_key(cfg, pretext, pool, np.ones(len(pool.samples), bool), torch.device("cpu"), None)


def pool_config(**flags):
    return build_config("smoke", flags={"device": "cpu", "pretext": "simclr", "transfer": "finetune",
                                        "pretext_data.dataset": "synthetic", **flags})


def test_stage_key_follows_defaults_not_only_the_options_a_user_set(monkeypatch):
    """Issue 25 item 4: a changed default of a pretext option is another stage; setting an option
    to its default is the same stage as leaving it."""
    cfg = pool_config()
    pool = load_evaluation_data(cfg)
    base = simclr_key(cfg, pool)
    set_to_default = simclr_key(pool_config(**{"params.simclr.temperature": 0.5}), pool)
    init = PRETEXTS.get("simclr").__init__
    names = [p.name for p in inspect.signature(init).parameters.values() if p.default is not p.empty]
    defaults = list(init.__defaults__)
    assert defaults[names.index("temperature")] == 0.5
    defaults[names.index("temperature")] = 0.25
    monkeypatch.setattr(init, "__defaults__", tuple(defaults))
    assert simclr_key(cfg, pool) != base
    assert set_to_default == base


@pytest.mark.parametrize("library", [torch, timm, lightly, np])
def test_stage_key_follows_the_library_versions(monkeypatch, library):
    cfg = pool_config()
    pool = load_evaluation_data(cfg)
    base = simclr_key(cfg, pool)
    monkeypatch.setattr(library, "__version__", "0.0.1-other")
    assert simclr_key(cfg, pool) != base


def test_code_digest_follows_the_computing_code_only(tmp_path):
    """The code in the key: an edit of any module a stage runs changes it, an edit of the CLI or
    the reports does not (they only orchestrate runs or read them)."""
    package = tmp_path / "ssl_bench"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    for module, changes in (("pretext/views.py", True), ("training/loop.py", True), ("report/render.py", False),
                            ("cli/run_cmd.py", False)):
        before = source_digest(package)
        with open(package / module, "a") as fh:
            fh.write("# edited\n")
        assert (source_digest(package) != before) is changes, module


def rewrite_keeping_size_and_mtime(path, write) -> None:
    """Rewrite ``path`` with ``write(path)`` as ``cp -p`` or ``rsync -t`` would: same length,
    modification time restored."""
    before = os.stat(path)
    time.sleep(0.02)  # past a coarse timestamp tick
    write(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_weights_file_rewritten_with_its_size_and_mtime_is_another_stage(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"a" * 1000)
    cfg = pool_config(**{"model.pretrained": str(weights)})
    pool = load_evaluation_data(cfg)
    base = simclr_key(cfg, pool)
    assert simclr_key(cfg, pool) == base
    rewrite_keeping_size_and_mtime(weights, lambda p: p.write_bytes(b"b" * 1000))
    assert simclr_key(cfg, pool) != base


def test_a_pool_file_rewritten_with_its_size_and_mtime_is_decoded_again_and_rekeyed(tmp_path):
    """An uncompressed TIFF of the pool rewritten with other pixels, the same length and its
    modification time: the image cache decodes it again and the stage's key changes."""
    root, cache = tmp_path / "pool", tmp_path / "cache"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        pixels = rng.integers(0, 4000, size=(48, 36)).astype(np.uint16)
        pixels[:, :18] += 8000
        Image.fromarray(pixels).save(root / f"{name}.tif")
    cfg = pool_config(**{"pretext_data.dataset": "folder", "pretext_data.root": str(root)})

    def pool():
        return ImageFolder(root=str(root), image_size=SIZE, cache_dir=str(cache), workers=1).load()

    first = pool()
    key = simclr_key(cfg, first)
    assert simclr_key(cfg, pool()) == key  # read from the cache: the same stage
    other = rng.integers(0, 4000, size=(48, 36)).astype(np.uint16)
    other[:, :18] += 20000
    rewrite_keeping_size_and_mtime(root / "b.tif", lambda p: Image.fromarray(other).save(p))
    again = pool()
    np.testing.assert_allclose(again.images[1].astype(np.float32), preprocess_file(root / "b.tif", SIZE), atol=1e-3)
    assert not np.array_equal(again.images[1], first.images[1])
    np.testing.assert_array_equal(again.images[0], first.images[0])
    assert simclr_key(cfg, again) != key


# -------------------------------------------------------------------------------- folder dataset


def test_folder_reads_png_and_dicom_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4000, size=(48, 36)).astype(np.uint16)
    pixels[:, :18] += 8000  # dense tissue against the left edge
    root = tmp_path / "pool"
    (root / "p1").mkdir(parents=True)
    (root / "p2" / "s").mkdir(parents=True)
    (root / ".hidden").mkdir()
    Image.fromarray(pixels).save(root / "p1" / "a.png")  # 16-bit PNG
    make_dicom(root / "p1" / "b.dcm", pixels, bits_stored=14)  # the same values as a DICOM
    make_dicom(root / "p2" / "s" / "c", pixels[::-1].copy(), bits_stored=14)  # DICOM without extension
    Image.fromarray(pixels).save(root / "top.png")
    Image.fromarray(pixels).save(root / ".hidden" / "x.png")
    (root / "notes.txt").write_text("not an image")
    ds = ImageFolder(root=str(root), image_size=SIZE, cache_dir=str(tmp_path / "cache"), workers=1)
    loaded = ds.load()
    s = loaded.samples
    assert list(s["image_id"]) == ["p1/a.png", "p1/b.dcm", "p2/s/c", "top.png"]
    assert list(s["patient_id"]) == ["p1", "p1", "p2/s", "top"]
    assert (loaded.labels == -1).all() and not ImageFolder.labelled
    for i, path in enumerate(s["path"]):
        np.testing.assert_allclose(loaded.images[i].astype(np.float32), preprocess_file(path, SIZE), atol=1e-3)
    # a DICOM without a window and its lossless PNG give the same input
    np.testing.assert_array_equal(loaded.images[0], loaded.images[1])
    stems = ImageFolder(root=str(root), patient="stem", image_size=SIZE, cache_dir=str(tmp_path / "cache"), workers=1)
    assert list(stems.scan()[0]["patient_id"]) == ["p1/a", "p1/b", "p2/s/c", "top"]


# --------------------------------------------------------------------- the pretext stage once


@pytest.fixture(scope="module")
def png_pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("png_pool")
    synthetic_mammo.write_png_set(out, image_size=SIZE, seed=5, n_patients=6, n_benign=10, n_malignant=4)
    return out / "images"


def run_cli(*args):
    return CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", "--device", "cpu", *args])


def test_pretext_stage_trained_once_for_two_folds_and_two_fractions(png_pool, tmp_path, monkeypatch):
    calls = []
    real = stages.pretext_stage
    monkeypatch.setattr(stages, "pretext_stage", lambda ctx, *a, **kw: calls.append(ctx.n_images) or real(ctx, *a, **kw))
    pool_args = ["--pretext", "simclr", "--folds", "2", "--pretext-data", "folder", "--pretext-data-root", str(png_pool)]
    out = tmp_path / "a"
    result = run_cli(*pool_args, "--transfer", "finetune", "--label-fraction", "0.5,1.0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert calls == [14]  # once, on the 14 pool images, for 2 folds x 2 fractions
    records = [json.loads((out / name / "folds" / str(k) / "metrics.json").read_text())["pretext_pool"]
               for name in ("simclr-finetune-pool-folder-f0.5", "simclr-finetune-pool-folder") for k in range(2)]
    key = records[0]["cache_key"]
    assert {r["cache_key"] for r in records} == {key}
    assert sorted(r["reused"] for r in records) == [False, True, True, True]
    assert all(r["n_images"] == 14 and r["n_excluded"] == 0 and r["dataset"] == "folder" for r in records)
    summary = json.loads((out / "simclr-finetune-pool-folder" / "summary.json").read_text())
    assert summary["pretext_pool"]["1"]["cache_key"] == key
    checkpoint = torch.load(out / ".pretext-cache" / f"{key}.pt", weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["key"] == key

    # the frozen probes run the same stage: they reuse it too
    result = run_cli(*pool_args, "--transfer", "knn", "--set", "params.knn.k=3", "--fold", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert calls == [14]
    probe = json.loads((out / "simclr-knn-pool-folder" / "folds" / "0" / "metrics.json").read_text())["pretext_pool"]
    assert probe["cache_key"] == key and probe["reused"] is True

    # the fine-tuned run keeps its pretext stage in the cache: exported (issue 27, item 3), it is the
    # probe's frozen backbone, feature for feature
    stage = tmp_path / "stage.safetensors"
    exported = CliRunner().invoke(main, ["export", "--run", str(out / "simclr-finetune-pool-folder"),
                                         "--stage", "pretext", "--out", str(stage)])
    assert exported.exit_code == 0, exported.output
    assert read_provenance(stage)["source"] == f".pretext-cache/{key}.pt"
    record = load_model_record(out / "simclr-knn-pool-folder" / "folds" / "0" / "model.pt")
    knn = classifier_from_record(record)
    knn.load_state_dict(record["state_dict"])
    x = torch.rand(2, 1, *SIZE)
    backbone = create_backbone(record["architecture"]["backbone"], pretrained=stage).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_head(backbone.forward_features(x), pre_logits=True),
                                   knn.features(x))

    # a fresh output folder trains the stage again: fold 1 gives the same scores as the fold that
    # read it from the cache, so reusing it changes nothing
    calls.clear()
    again = tmp_path / "b"
    result = run_cli(*pool_args, "--transfer", "finetune", "--fold", "1", "--out", str(again))
    assert result.exit_code == 0, result.output
    assert calls == [14]
    reused = pd.read_csv(out / "simclr-finetune-pool-folder" / "folds" / "1" / "predictions.csv")
    trained = pd.read_csv(again / "simclr-finetune-pool-folder" / "folds" / "1" / "predictions.csv")
    assert json.loads((again / "simclr-finetune-pool-folder" / "folds" / "1" / "metrics.json").read_text()
                      )["pretext_pool"]["reused"] is False
    pd.testing.assert_frame_equal(reused, trained)

    # a damaged cache entry (a flipped byte in its weights) is dropped in one line and trained again
    entry = again / ".pretext-cache" / f"{key}.pt"
    largest = max(torch.load(entry, weights_only=True)["state_dict"].values(), key=torch.numel)
    data = bytearray(entry.read_bytes())
    at = data.find(largest.numpy().tobytes())  # torch keeps a tensor's bytes as they are
    assert at >= 0
    data[at + 9] ^= 0x01
    entry.write_bytes(bytes(data))
    result = run_cli(*pool_args, "--transfer", "knn", "--set", "params.knn.k=3", "--fold", "1", "--out", str(again))
    assert result.exit_code == 0, result.output
    assert calls == [14, 14]
    assert f"warning: pretext-stage cache {entry}" in " ".join(result.output.split())


# --------------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("args, message", [
    (["--pretext", "gsim", "--transfer", "finetune", "--pretext-data", "folder"], "uses the class labels"),
    (["--pretext", "gsim", "--transfer", "collab", "--pretext-data", "synthetic"], "no pretext stage to pretrain"),
    (["--pretext", "simclr", "--transfer", "multitask", "--pretext-data", "synthetic"], "no pretext stage to pretrain"),
    (["--dataset", "folder"], "has no labels"),
    (["--pretext-data", "nosuch"], "nosuch"),
    (["--pretext-data-root", "x"], "--pretext-data-root needs --pretext-data"),
    (["--pretext", "gsim", "--pretext-data", "synthetic", "--label-fraction", "0.5"], "outside the label fraction"),
])
def test_pool_errors_are_one_line(tmp_path, png_pool, args, message):
    if "--pretext-data" in args and args[args.index("--pretext-data") + 1] == "folder":
        args = [*args, "--pretext-data-root", str(png_pool)]
    result = run_cli(*args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_bench_pretext_data_flag_reaches_every_job(png_pool, tmp_path):
    bench = tmp_path / "b.yaml"
    bench.write_text("methods:\n  SimCLR-kNN: {pretext: simclr, transfer: knn, params: {knn: {k: 3}}}\n"
                     "label_fractions: [0.5, 1.0]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", str(bench), "--profile", "smoke", "--quiet", "--explain", "0", "--device", "cpu",
                                       "--folds", "2", "--out", str(out), "--pretext-data", "folder",
                                       "--pretext-data-root", str(png_pool)])
    assert result.exit_code == 0, result.output
    records = [json.loads((out / name / "folds" / str(k) / "metrics.json").read_text())["pretext_pool"]
               for name in ("SimCLR-kNN-f0.5", "SimCLR-kNN") for k in range(2)]
    assert len({r["cache_key"] for r in records}) == 1  # one stage for 2 folds x 2 fractions
    assert sorted(r["reused"] for r in records) == [False, True, True, True]
    config = yaml.safe_load((out / "SimCLR-kNN" / "config.yaml").read_text())
    assert config["pretext_data"] == {"dataset": "folder", "root": str(png_pool)}
