"""The README tells a newcomer what the install costs and how to keep it small (issue 15, case 11:
a 6.5 GB surprise and no word on CPU-only wheels), and every ``pip install "ssl-bench[...]"``
it or an error message suggests names an extra that pyproject.toml defines. docs/datasets.md, the
guide to bringing one's own data (issue 28, item 1), has a section for every built-in dataset."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ssl_bench.registry import builtin_catalogue
from ssl_bench.training.tracking import BACKEND_MODULES

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
DATASETS_GUIDE = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")


def test_readme_gives_install_size_cpu_command_and_test_time():
    """The Quickstart gives the CPU-only install as a command in its own place (not only advice
    after the 6 GB CUDA install), the sizes, and what the test suite costs."""
    quickstart = README.split("## Usage")[0]
    assert re.search(r"installs [\d.]+ GB", quickstart) and re.search(r"`test` extra [\d.]+ GB", quickstart)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", quickstart, re.S) for line in block.splitlines()]
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in commands
    assert re.search(r"\d+ tests: about \d+ minutes", quickstart)


def test_every_suggested_extra_exists():
    suggested = set(re.findall(r'ssl-bench\[(\w+)\]', README))
    suggested |= set(BACKEND_MODULES)  # the extras --log names when its library is missing
    assert {"ray", "tensorboard", "mlflow"} <= suggested
    assert suggested <= set(EXTRAS), suggested - set(EXTRAS)


def test_data_guide_has_a_section_for_every_registered_dataset():
    """Each dataset ``ssl-bench list datasets`` shows (the built-in registry, read as the listing
    reads it) has its own ``## <name>`` section, so a new dataset cannot go undocumented."""
    names = [row.name for row in builtin_catalogue()["datasets"]]
    assert {"inbreast", "cbis_ddsm", "vindr_mammo", "manifest", "folder", "synthetic"} <= set(names)
    sections = {line[3:].strip().strip("`") for line in DATASETS_GUIDE.splitlines() if line.startswith("## ")}
    missing = [name for name in names if name not in sections]
    assert not missing, f"docs/datasets.md has no '## <name>' section for {missing}"
