"""The sharded image cache (ssl_bench/data/cache.py): shards of at most SHARD_ROWS images and an
index, read back memory-mapped; a killed build resumes at the first missing shard; the per-image
cache of earlier versions is migrated without decoding."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from ssl_bench.data import cache as cache_module
from ssl_bench.data.cache import ShardedImages, cache_file, shard_folder, sharded_images

SIZE = (8, 4)
N = 8


def image_of(i: int) -> np.ndarray:
    return np.full(SIZE, i / 16, dtype=np.float16) + np.linspace(0, 0.01, SIZE[1], dtype=np.float16)


def recorder(fail_at: int | None = None):
    calls: list[list[int]] = []

    def produce(rows):
        calls.append(list(rows))
        for i in rows:
            if i == fail_at:
                raise KeyboardInterrupt  # a killed prepare
            if i == 5:
                yield i, None, "cannot decode"
            else:
                yield i, image_of(i), ""

    return produce, calls


@pytest.fixture(autouse=True)
def three_per_shard(monkeypatch):
    monkeypatch.setattr(cache_module, "SHARD_ROWS", 3)


def build(tmp_path, produce):
    keys = [f"key{i}" for i in range(N)]
    return sharded_images(shard_folder(tmp_path, SIZE), keys, [f"img{i}" for i in range(N)], SIZE, produce,
                          legacy_dir=tmp_path)


def test_shards_index_and_reads(tmp_path):
    produce, calls = recorder()
    images, failed = build(tmp_path, produce)
    assert calls == [[0, 1, 2], [3, 4, 5], [6, 7]]  # one shard at a time
    assert failed == {5: "cannot decode"}
    folder = shard_folder(tmp_path, SIZE)
    shards = sorted(folder.glob("*.npy"))
    assert len(shards) == 3 and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in shards)
    assert isinstance(np.load(shards[0], mmap_mode="r"), np.memmap)
    index = pd.read_csv(next(folder.glob("index-*.csv")), keep_default_na=False)
    assert list(index.columns) == ["row", "image_id", "key", "shard", "offset", "height", "width", "problem"]
    assert list(index["offset"]) == [0, 1, 2, 0, 1, 2, 0, 1] and index["shard"].nunique() == 3
    assert index.loc[5, "problem"] == "cannot decode" and set(index["height"]) == {8}

    assert images.shape == (N, *SIZE) and images.dtype == np.float16 and images.nbytes == N * 8 * 4 * 2
    want = np.stack([image_of(i) if i != 5 else np.zeros(SIZE, np.float16) for i in range(N)])
    np.testing.assert_array_equal(np.asarray(images), want)
    np.testing.assert_array_equal(images[[7, 0, 4]], want[[7, 0, 4]])
    np.testing.assert_array_equal(images[6], want[6])
    mask = np.arange(N) % 2 == 1
    np.testing.assert_array_equal(np.asarray(images.subset(mask)), want[mask])
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(images))), want)  # for spawned workers

    again, calls2 = recorder()
    reread, failed2 = build(tmp_path, again)
    assert calls2 == [] and failed2 == failed  # the index answers: nothing produced
    np.testing.assert_array_equal(np.asarray(reread), want)


def test_killed_build_resumes_at_the_first_missing_shard(tmp_path):
    produce, calls = recorder(fail_at=7)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, produce)
    folder = shard_folder(tmp_path, SIZE)
    assert len(list(folder.glob("*.npy"))) == 2 and not list(folder.glob("index-*"))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no half-written file
    resumed, calls2 = recorder()
    images, _ = build(tmp_path, resumed)
    assert calls2 == [[6, 7]]
    np.testing.assert_array_equal(images[7], image_of(7))


def test_changed_image_rebuilds_its_shard_from_the_others(tmp_path):
    produce, _ = recorder()
    build(tmp_path, produce)
    keys = [f"key{i}" for i in range(N)]
    keys[4] = "key4-touched"
    again, calls = recorder()
    images, _ = sharded_images(shard_folder(tmp_path, SIZE), keys, keys, SIZE, again)
    assert calls == [[4, 5]]  # 3 copied from the old shard; 5 failed there, so it is retried
    np.testing.assert_array_equal(images[3], image_of(3))


def test_per_image_cache_is_migrated_not_decoded(tmp_path, capsys):
    for i in range(N):
        target = cache_file(tmp_path, f"key{i}")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, image_of(i))
    produce, calls = recorder()
    images, failed = build(tmp_path, produce)
    assert calls == [] and failed == {}
    np.testing.assert_array_equal(images[5], image_of(5))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "moved 8 image(s) from the per-image cache" in err


def test_sharded_images_is_what_datasets_return(tmp_path):
    from ssl_bench.data.synthetic import SyntheticMammography
    from ssl_bench.data.synthetic_mammo import generate

    options = dict(n_patients=4, n_benign=6, n_malignant=4, seed=3)
    loaded = SyntheticMammography(image_size=(64, 32), cache_dir=str(tmp_path), **options).load()
    assert isinstance(loaded.images, ShardedImages) and len(list(shard_folder(tmp_path, (64, 32)).glob("*.npy"))) == 4
    table, images = generate(image_size=(64, 32), **options)
    np.testing.assert_array_equal(np.asarray(loaded.images), images)  # bit-identical to the in-memory generator
    assert list(loaded.samples["image_id"]) == list(table["image_id"])
