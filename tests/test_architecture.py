"""The architecture holds: the layers contract in pyproject.toml (import-linter) is kept and no
module of ssl_bench takes part in an import cycle, function-level imports included."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_layers_contract_is_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter, a test dependency) is not installed"
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_every_transfer_and_pretext_task_is_in_its_independence_contract():
    """A module that registers a transfer or a pretext task is listed in pyproject.toml's
    independence contract of its kind, so it can import nothing from another of its kind."""
    contracts = {c["name"]: set(c.get("modules", []))
                 for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}
    for package, registry, contract in (("transfer", "TRANSFERS", "transfers are independent"),
                                        ("pretext", "PRETEXTS", "pretext tasks are independent")):
        registering = {f"ssl_bench.{package}.{f.stem}" for f in (ROOT / "ssl_bench" / package).glob("*.py")
                       if f"@{registry}.register(" in f.read_text()}
        assert len(registering) >= 5 and registering == contracts[contract], package


def build_graph():
    return grimp.build_graph("ssl_bench", cache_dir=None)


def import_cycles(graph) -> list[str]:
    """Every module that imports (directly) a module which imports it back (through any chain)."""
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.append(" -> ".join((module, *chain)))
    return cycles


def test_no_import_cycles():
    cycles = import_cycles(build_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_check_can_fail():
    """The check above finds a cycle when there is one: on a graph of its own (the real one is
    left alone), one fake import from the bottom layer (errors) to a module that imports it
    (config) closes a cycle that import_cycles must report, naming both."""
    graph = build_graph()
    assert not any("ssl_bench.errors" in cycle for cycle in import_cycles(graph))
    graph.add_import(importer="ssl_bench.errors", imported="ssl_bench.config")
    found = [cycle for cycle in import_cycles(graph) if "ssl_bench.errors" in cycle and "ssl_bench.config" in cycle]
    assert "ssl_bench.errors -> ssl_bench.config -> ssl_bench.errors" in found


def test_reporting_finished_runs_imports_neither_torch_nor_timm(tmp_path):
    """``ssl-bench report`` reads only the CSV, JSON and YAML of finished runs: loading torch and
    timm for it (through the run directory's model and checkpoint formats) took most of its start.
    A fresh interpreter runs the report command itself on two committed runs."""
    runs = ROOT / "docs" / "results" / "table2-quick" / "runs"
    out = tmp_path / "leaderboard.md"
    code = (
        "import sys\n"
        "from ssl_bench.cli.report_cmd import report\n"
        f"report.main([{str(runs / 'ResNet')!r}, {str(runs / 'SimCLR')!r}, '--n-boot', '100',"
        f" '--out', {str(out)!r}], standalone_mode=False)\n"
        "heavy = sorted(m for m in ('torch', 'timm') if m in sys.modules)\n"
        "print('heavy:', ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert out.is_file() and "SimCLR" in out.read_text()
    assert done.stdout.strip().splitlines()[-1] == "heavy:", done.stdout
