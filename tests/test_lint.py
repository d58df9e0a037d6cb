"""ruff's checks hold on the whole tree (the rules and why each ignore is there: pyproject.toml,
[tool.ruff]): undefined names, unused imports and variables, and bugbear's likely bugs."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff (a test dependency) is not installed"
    done = subprocess.run([exe, "check", "--no-cache", "--output-format", "concise",
                           "ssl_bench", "tests", "plugins", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
