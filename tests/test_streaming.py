"""The streaming data path (ssl_bench/training/images.py): the memory budget decides between the
resident tensor and a DataLoader over the memory-mapped cache, and a seed gives the same batches,
and so the same fold, on either path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.data import cache as cache_module
from ssl_bench.data.cache import shard_folder, sharded_images
from ssl_bench.errors import ConfigError
from ssl_bench.training.batches import FoldBatches
from ssl_bench.training.images import (SAFETY_FACTOR, StreamedImages, available_memory, memory_budget,
                                       should_stream)

CPU = torch.device("cpu")


def test_budget_decides_the_path():
    assert should_stream("auto", nbytes=100, budget=199)  # two resident copies: 200 bytes
    assert not should_stream("auto", nbytes=100, budget=200)
    assert should_stream("on", 1, 10**12) and not should_stream("off", 10**12, 1)
    assert memory_budget(CPU, 1.5) == int(1.5 * 2**30)
    free = available_memory(CPU)
    assert free > 0 and abs(memory_budget(CPU) - SAFETY_FACTOR * free) < 0.05 * free  # RAM moves a little
    for key, value in (("data.streaming", "maybe"), ("data.memory_budget_gb", -1), ("data.loader_workers", -1)):
        with pytest.raises(ConfigError, match=key):
            build_config("smoke", {}, {key: value})


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """23 random images in shards of 5, as the cache serves them."""
    monkeypatch.setattr(cache_module, "SHARD_ROWS", 5)
    rng = np.random.default_rng(0)
    arrays = rng.random((23, 16, 8)).astype(np.float16)
    images, _ = sharded_images(shard_folder(tmp_path, (16, 8)), [f"k{i}" for i in range(23)],
                               [str(i) for i in range(23)], (16, 8), lambda rows: ((i, arrays[i], "") for i in rows))
    return images, arrays


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_resident_batches(stored, workers):
    images, arrays = stored
    rows = torch.tensor([0, 2, 3, 5, 7, 8, 11, 12, 13, 17, 19, 20, 22])  # a fold's training rows
    labels = torch.arange(23, dtype=torch.float32)
    resident = torch.from_numpy(arrays).unsqueeze(1).index_select(0, rows)
    streamed = StreamedImages(images, CPU, workers).index_select(0, rows)
    assert streamed.shape == resident.shape == (13, 1, 16, 8)
    torch.testing.assert_close(streamed[3:9], resident[3:9], rtol=0, atol=0)

    def epochs(source):
        torch.manual_seed(7)
        batches = FoldBatches(source, labels.index_select(0, rows), batch_size=4)
        return [b for _ in range(2) for b in batches.epoch()]

    want, got = epochs(resident), epochs(streamed)
    assert len(want) == len(got) == 2 * 3  # 13 = 4 + 4 + 4 + a single image, dropped
    for (xw, yw), (xg, yg) in zip(want, got):
        assert torch.equal(xw, xg) and torch.equal(yw, yg)
    assert not torch.equal(want[0][0], want[3][0])  # another order (and augmentation) each epoch


@pytest.mark.parametrize("pretext, transfer", [("gsim", "finetune"), ("none", "knn")])  # batches; slices
def test_fold_gives_the_same_result_on_either_path(pretext, transfer):
    from ssl_bench.data.loading import load_dataset
    from ssl_bench.data.splits import make_folds
    from ssl_bench.experiment.fold import train_and_score_fold
    from ssl_bench.training.images import dataset_images

    results = {}
    for streaming in ("off", "on"):
        cfg = build_config("smoke", {"pretext": pretext, "transfer": transfer},
                           {"data.streaming": streaming, "data.loader_workers": 0, "data.folds": 3})
        loaded = load_dataset(cfg)
        assert isinstance(dataset_images(cfg, loaded, CPU), StreamedImages) == (streaming == "on")
        folds = make_folds(loaded.labels, loaded.groups, 3, cfg.seed)
        results[streaming] = train_and_score_fold(cfg, loaded, folds, 1, CPU)
    off, on = results["off"], results["on"]
    np.testing.assert_array_equal(off.predictions["score"], on.predictions["score"])
    for name, value in off.model["state_dict"].items():
        assert torch.equal(value, on.model["state_dict"][name]), name
    assert off.history.equals(on.history.assign(seconds=off.history["seconds"]))
