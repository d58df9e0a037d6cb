"""``benchmarks/scale.py --small`` runs end to end (each measurement in its own process) and its
figures are consistent: image counts, the images' size, throughput from the timed epoch, the ratio."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_scale_small_on_cpu(tmp_path):
    out = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--small", "--ray-workers", "0",
                           "--epochs", "2", "--batch", "16", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "64 images: generate" in proc.stdout
    results = json.loads(out.read_text())
    assert "errors" not in results and "ray" not in results
    row = results["sizes"]["64"]
    assert row["generate"]["n_images"] == row["load"]["n_images"] == 64
    assert row["load"]["images_mib"] == round(64 * 64 * 32 * 2 / 2**20, 1)  # float16 at 64x32
    for mode in ("resident", "stream"):
        epoch = row[mode]
        assert epoch["n_images"] == 64 and len(epoch["epoch_s"]) == 2
        assert epoch["img_s"] == pytest.approx(64 / epoch["epoch_s"][-1])
        assert epoch["rss_mib"] > 0
    assert row["stream_over_resident"] == pytest.approx(row["stream"]["img_s"] / row["resident"]["img_s"])
