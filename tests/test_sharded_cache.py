"""The sharded image cache (ssl_bench/data/cache.py): shards of at most SHARD_ROWS images and an
index, read back memory-mapped; a killed build resumes at the first missing shard; the per-image
cache of earlier versions is migrated without decoding; a damaged shard or index (flipped bytes,
truncation, permuted or out-of-range offsets) is never read: one line, then made again."""
from __future__ import annotations

import json
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from ssl_bench.data import cache as cache_module
from ssl_bench.data.cache import ShardedImages, cache_file, shard_folder, sharded_images
from ssl_bench.errors import ToolkitWarning

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


# --- what is read back is checked: a damaged shard or index is dropped with one line and made again

def built(tmp_path):
    """A built cache, its folder, shard files in row order, index path and the images it holds."""
    produce, _ = recorder()
    images, _ = build(tmp_path, produce)
    folder = shard_folder(tmp_path, SIZE)
    index_path = next(folder.glob("index-*.csv"))
    names = list(dict.fromkeys(pd.read_csv(index_path)["shard"]))
    return folder, [folder / f"{n}.npy" for n in names], index_path, np.asarray(images)


def rebuild(tmp_path, match: str | None):
    """Load again, expecting one warning matching ``match`` (None: no warning at all)."""
    produce, calls = recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, failed = build(tmp_path, produce)
    lines = [str(w.message) for w in caught]
    if match is None:
        assert lines == []
    else:
        assert len(lines) == 1 and re.search(match, lines[0]), lines
        assert issubclass(caught[0].category, ToolkitWarning)
    return np.asarray(images), failed, calls


def flip(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_shard_drops_it_and_only_it_is_made_again(tmp_path):
    folder, shards, _, want = built(tmp_path)
    flip(shards[1], -3)  # in the last image's pixels: the array still loads, with another value
    images, failed, calls = rebuild(tmp_path, rf"^cache: shard {re.escape(str(shards[1]))} is damaged \(its "
                                              r"checksum does not match its content\): dropped, its images are made again$")
    assert calls == [[3, 4, 5]] and failed == {5: "cannot decode"}
    np.testing.assert_array_equal(images, want)
    assert rebuild(tmp_path, None)[2] == []  # repaired: the next load reads it


def test_a_truncated_shard_is_one_line_and_made_again(tmp_path):
    folder, shards, _, want = built(tmp_path)
    shards[0].write_bytes(shards[0].read_bytes()[:-10])
    images, _, calls = rebuild(tmp_path, r"shard .*\.npy cannot be read \(.*\): dropped, its images are made again$")
    assert calls == [[0, 1, 2]]
    np.testing.assert_array_equal(images, want)


def test_an_edited_shard_list_is_damage_too(tmp_path):
    folder, shards, _, want = built(tmp_path)
    meta = shards[1].with_suffix(".json")
    record = json.loads(meta.read_text())
    record["failed"] = {}  # row 5 would read as a good image of zeros
    meta.write_text(json.dumps(record))
    images, failed, calls = rebuild(tmp_path, r"is damaged \(its checksum does not match")
    assert calls == [[3, 4, 5]] and failed == {5: "cannot decode"}


def test_a_shard_without_a_checksum_is_made_again_once(tmp_path):
    folder, shards, _, want = built(tmp_path)
    for shard in shards:  # the layout of the version before checksums
        meta = shard.with_suffix(".json")
        meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "sha256"}))
    images, _, calls = rebuild(tmp_path, rf"^cache: 3 shard\(s\) in {re.escape(str(folder))} were written without a "
                                         r"checksum by an earlier version of ssl-bench: their images are made again, once$")
    assert calls == [[0, 1, 2], [3, 4, 5], [6, 7]]
    np.testing.assert_array_equal(images, want)


@pytest.mark.parametrize("edit, says", [
    (lambda index: index.assign(offset=index["offset"].to_numpy()[[1, 0, 2, 3, 4, 5, 7, 6]]), "points row 0 to another image"),
    (lambda index: index.assign(offset=index["offset"].where(index["row"] != 7, 9)), r"gives row 7 an offset \(9\) outside"),
    (lambda index: index.assign(problem=""), "points row 5 to another image"),
    (lambda index: index.iloc[::-1], "does not list this dataset's images in order"),
])
def test_an_index_that_disagrees_with_its_shards_is_rebuilt_from_them(tmp_path, edit, says):
    folder, _, index_path, want = built(tmp_path)
    edit(pd.read_csv(index_path, keep_default_na=False)).to_csv(index_path, index=False)
    images, failed, calls = rebuild(tmp_path, rf"^cache: index {re.escape(str(index_path))} {says}.*: dropped, "
                                              r"rebuilt from the shards$")
    assert calls == [] and failed == {5: "cannot decode"}  # the shards are whole: nothing is made again
    np.testing.assert_array_equal(images, want)
    assert rebuild(tmp_path, None)[2] == []


def test_images_are_copied_only_from_shards_that_check(tmp_path):
    folder, shards, _, want = built(tmp_path)
    flip(shards[0], -3)
    keys = [f"key{i}" for i in range(N)]
    keys[1] = "key1-touched"  # shard 0 is built anew; rows 0 and 2 would be copied from the damaged one
    again, calls = recorder()
    images, _ = sharded_images(folder, keys, keys, SIZE, again)
    assert calls == [[0, 1, 2]]
    np.testing.assert_array_equal(np.asarray(images), want)
