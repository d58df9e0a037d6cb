"""``ssl-bench --help`` and ``ssl-bench list`` stay fast (issue 15, case 8: they took seconds): they
import none of the deep-learning and plotting libraries, checked in a fresh interpreter; and the
listing read from the source files is the one the imported registries give."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ssl_bench import registry

HEAVY = ("torch", "torchvision", "timm", "lightly", "sklearn", "matplotlib", "ray", "pydicom")

PROBE = """
import sys
from ssl_bench import registry
registry.plugin_entry_points = lambda: []  # an installed plugin imports torch itself (the rotation example does)
from ssl_bench.cli import main
try:
    main({args!r}, standalone_mode=False)
finally:
    heavy = sorted(m for m in {heavy!r} if m in sys.modules)
    print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def heavy_imports(args: list[str]) -> tuple[list[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in line[len("HEAVY="):].split(",") if m], done.stdout


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["bench", "--help"], ["list"],
                                  ["list", "pretexts", "--filter", "*sim*"]])
def test_help_and_list_import_no_heavy_library(args):
    heavy, out = heavy_imports(args)
    assert heavy == [], f"ssl-bench {' '.join(args)} imported {heavy}"
    if args[0] == "list":
        assert "gsim" in out and "simclr" in out and "built-in" in out


def test_listing_from_source_equals_the_imported_registries():
    registry.ensure_loaded()
    for kind, reg in registry.REGISTRIES.items():
        # components the package itself registers (tests may register their own in this process)
        imported = [registry.Listed(name, "built-in", registry.summary(reg.get(name)))
                    for name in reg.names() if reg.entry(name).origin == "built-in"
                    and getattr(reg.get(name), "__module__", "").startswith("ssl_bench.")]
        assert list(registry.builtin_catalogue()[kind]) == imported, kind
