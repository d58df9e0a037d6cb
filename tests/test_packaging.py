"""Ready to publish (issue 28, item 8): ``python -m build`` makes an sdist and a wheel of ssl-bench
and of the example plugin that pass ``twine check --strict``; the version comes from one place
(``ssl_bench.__version__``); and the wheel, installed on its own, is the whole toolkit: every
module of the source tree (``ssl-bench list`` reads the built-ins' source files), the extras the
README names, and a working ``ssl-bench`` with the plugin's entry point.

The builds run on copies of the source trees (a build writes ``build/`` and ``*.egg-info`` next to
``pyproject.toml``) with ``--no-isolation``: the backend comes from this environment (the ``test``
extra), so nothing is downloaded."""
from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ssl_bench
from ssl_bench.training.tracking import BACKEND_MODULES

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "ssl-bench-rotation"
# what a checkout holds that is not source: dot-folders (.git, caches), outputs, byte code
NOT_SOURCE = shutil.ignore_patterns(".*", "runs", "build", "dist", "__pycache__", "*.egg-info")


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Project name -> {"sdist": path, "wheel": path}, built as ``python -m build`` builds them
    (the sdist, then the wheel from the unpacked sdist, so the sdist must be complete)."""
    tmp = tmp_path_factory.mktemp("packaging")
    built = {}
    for name, source in [("ssl-bench", ROOT), ("ssl-bench-rotation", PLUGIN)]:
        copy = shutil.copytree(source, tmp / "src" / name, ignore=NOT_SOURCE)
        out = tmp / "dist" / name
        _run("-m", "build", "--no-isolation", "--outdir", str(out), str(copy))
        sdists, wheels = list(out.glob("*.tar.gz")), list(out.glob("*.whl"))
        assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
        built[name] = {"sdist": sdists[0], "wheel": wheels[0]}
    return built


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> dict[str, str]:
    """Both wheels installed alone (``pip install --no-deps --target``): the environment for a
    subprocess whose ssl_bench is the wheel's, not this checkout's editable install."""
    target = tmp_path_factory.mktemp("site")
    wheels = [str(d["wheel"]) for d in dists.values()]
    _run("-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), *wheels)
    return {**os.environ, "PYTHONPATH": str(target)}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def test_sdists_and_wheels_pass_twine_check_strict(dists):
    files = [str(p) for d in dists.values() for p in d.values()]
    done = _run("-m", "twine", "check", "--strict", *files)
    assert done.stdout.count("PASSED") == len(files), done.stdout


def test_wheel_version_is_the_package_version(dists):
    assert _metadata(dists["ssl-bench"]["wheel"])["Version"] == ssl_bench.__version__
    assert dists["ssl-bench"]["wheel"].name.startswith(f"ssl_bench-{ssl_bench.__version__}-")


def test_wheel_holds_every_file_of_the_package(dists):
    """Every subpackage and module (the listing parses built-ins' source files, ssl_bench/registry.py)
    and every non-Python file the package might read at run time."""
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ssl_bench").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    with zipfile.ZipFile(dists["ssl-bench"]["wheel"]) as z:
        packaged = {n for n in z.namelist() if n.startswith("ssl_bench/")}
    packages = {Path(n).parent.as_posix() for n in source if n.endswith("/__init__.py")}
    assert {"ssl_bench", "ssl_bench/cli", "ssl_bench/pretext"} <= packages
    assert source - packaged == set(), "missing from the wheel (package-data?)"
    assert packaged - source == set(), "in the wheel but not in the source tree"


def test_wheels_carry_the_licence_text(dists):
    """The metadata says MIT; the MIT licence asks that its text travel with every copy."""
    for name, files in dists.items():
        with zipfile.ZipFile(files["wheel"]) as z:
            licences = [n for n in z.namelist() if n.split("/")[-1] == "LICENSE"]
            assert licences and b"MIT License" in z.read(licences[0]), name
        assert _metadata(files["wheel"])["License-Expression"] == "MIT"


def test_readme_extras_are_declared_by_the_wheel(dists):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r'ssl-bench\[(\w+)\]', readme)) | set(re.findall(r'"\.\[(\w+)\]"', readme))
    named |= set(BACKEND_MODULES)  # the extras --log names when its library is missing
    assert {"ray", "tensorboard", "mlflow", "test"} <= named
    declared = set(_metadata(dists["ssl-bench"]["wheel"]).get_all("Provides-Extra"))
    assert named <= declared, named - declared


def test_installed_wheels_run_ssl_bench_with_the_plugin(dists, installed, tmp_path):
    """The wheels alone, on PYTHONPATH, from a folder outside the checkout: the imported modules
    are the wheels', the installed metadata's version is ``__version__``, and ``ssl-bench list``
    shows the built-ins and the plugin's task (found through the plugin wheel's entry point)."""
    target = installed["PYTHONPATH"]
    probe = ("import importlib.metadata as m, ssl_bench, ssl_bench_rotation; "
             "print(ssl_bench.__file__); print(ssl_bench_rotation.__file__); "
             "print(ssl_bench.__version__); print(m.version('ssl-bench'))")
    lines = _run("-c", probe, env=installed, cwd=tmp_path).stdout.split()
    assert all(Path(f).resolve().is_relative_to(Path(target).resolve()) for f in lines[:2]), lines
    assert lines[2] == lines[3] == ssl_bench.__version__
    version = _run("-m", "ssl_bench", "--version", env=installed, cwd=tmp_path).stdout
    assert version.strip() == f"ssl-bench, version {ssl_bench.__version__}"
    listing = _run("-m", "ssl_bench.cli", "list", "pretexts", env={**installed, "COLUMNS": "200"}, cwd=tmp_path)
    assert "not loaded" not in listing.stderr, listing.stderr
    plugin_version = _metadata(dists["ssl-bench-rotation"]["wheel"])["Version"]
    assert re.search(r"gsim\s.*built-in", listing.stdout), listing.stdout
    assert re.search(rf"rotation\s.*ssl-bench-rotation {re.escape(plugin_version)}", listing.stdout), listing.stdout
