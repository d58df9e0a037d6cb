"""``benchmarks/speed.py --device cpu --small`` runs end to end (as in CI) and reports every number."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"ResNet", "SimCLR", "CR-F-ResNet", "GM-F-ResNet", "GM-M-ResNet", "TSBN-U", "TSBN-R"}
# table2.yaml's control row: a logistic regression with no training epochs, so no stage to time
# (speed.py records its whole fit as setup time)
UNTIMED = {"Non-spatial"}


def _positive(d: dict, *keys: str) -> None:
    for key in keys:
        value = d.get(key)
        assert isinstance(value, (int, float)) and value > 0, f"{key} = {value!r} in {sorted(d)}"


def test_speed_small_on_cpu(tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--device", "cpu", "--small",
         "--methods", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "ratios: ssl_bench" in text and "TSBN-U" in text and "ResNet" in text
    assert "naive DICOM DataLoader" in text and "jobs-per-gpu 2" in text and "Table II projection" in text

    r = json.loads(out.read_text())
    assert "errors" not in r, r.get("errors")
    for key in ("tsbn_u_b4", "resnet_b4"):
        row = r["steps"][key]
        _positive(row["reference"], "img_s", "step_s")
        _positive(row["ssl_bench"], "img_s", "step_s")
        _positive(row, "ratio")
    _positive(r["data"], "naive_epoch_s", "ssl_bench_epoch_s", "naive_over_ssl_bench",
              "ssl_bench_data_share", "naive_data_share", "cache_warm_s_per_img", "train_epoch_s")
    assert r["data"]["compression"] == "rle"
    _positive(r["jobs"], "ratio")
    _positive(r["jobs"]["one"], "aggregate_img_s")
    assert r["jobs"]["many"]["jobs"] == 2
    _positive(r["jobs"]["many"], "aggregate_img_s")
    methods = r["methods"]["eager"]
    assert set(methods) == METHODS | UNTIMED
    assert methods["Non-spatial"]["stages"] == {} and methods["Non-spatial"]["setup_s"] > 0
    timed = {name: m for name, m in methods.items() if name not in UNTIMED}
    for name, m in timed.items():
        assert m["stages"], name
        for stage in m["stages"].values():
            _positive(stage, "img_s", "s_per_img", "epoch_s")
    p = r["projection"]["eager"]
    assert p["complete"] and set(p["per_method_s"]) == METHODS | UNTIMED
    _positive(p, "total_s", "total_packed_s")
    _positive(p["per_method_s"], *METHODS)
