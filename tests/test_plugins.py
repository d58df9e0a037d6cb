"""Plugins through the entry-point group ``ssl_bench.plugins``: lazy one-time loading, origins in
``ssl-bench list``, and broken plugins (import error, duplicate name) that warn once, naming
themselves, without breaking ``list`` or ``run``.

Fake plugins are real installed distributions as far as ``importlib.metadata`` is concerned: a
``<name>.dist-info`` folder (METADATA + entry_points.txt) and a module, both in a temporary folder
put on ``sys.path``. The registries are reset to "not loaded" for the test and restored after.
"""
from __future__ import annotations

import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ssl_bench import registry
from ssl_bench.cli import main
from ssl_bench.pretext.gsim import GrayScaleMapping
from ssl_bench.registry import PRETEXTS, TRANSFERS, PluginWarning

WIDE = {"COLUMNS": "250"}  # rich tables on one line per row

BROKEN = "import ssl_bench_no_such_module_xyz  # fails: ModuleNotFoundError\n"
DUPLICATE = '''
from ssl_bench.pretext.gsim import GrayScaleMapping
from ssl_bench.registry import PRETEXTS, TRANSFERS
from ssl_bench.transfer.finetune import FineTune

@TRANSFERS.register("dup_demo_transfer")      # registered first, must be rolled back
class DupTransfer(FineTune):
    """A transfer that is rolled back because its plugin fails."""

@PRETEXTS.register("gsim")                    # clashes with the built-in: DuplicateNameError
class MyGsim(GrayScaleMapping):
    """Another gsim."""
'''
GOOD = '''
import plugin_import_counter
plugin_import_counter.imports.append(__name__)

from ssl_bench.pretext.gsim import GrayScaleMapping
from ssl_bench.registry import PRETEXTS

@PRETEXTS.register("demo_gsim_copy")
class DemoGsimCopy(GrayScaleMapping):
    """GSIM again, registered by a fake plugin distribution."""
'''


class FakePlugins:
    """Writes fake plugin distributions into a folder on ``sys.path``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.modules: list[str] = []
        (folder / "plugin_import_counter.py").write_text("imports = []\n")
        self.modules.append("plugin_import_counter")

    def add(self, dist: str, version: str, entry: str, module: str, source: str) -> None:
        info = self.folder / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[ssl_bench.plugins]\n{entry} = {module}\n")
        (self.folder / f"{module}.py").write_text(textwrap.dedent(source))
        self.modules.append(module)

    @property
    def imports(self) -> list[str]:
        return sys.modules["plugin_import_counter"].imports if "plugin_import_counter" in sys.modules else []


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Registries back to 'not loaded' with fake plugin distributions on sys.path; restored after."""
    registry.ensure_loaded()  # built-ins and the real plugins stay registered
    saved = {kind: dict(reg._entries) for kind, reg in registry.ALL_REGISTRIES.items()}
    saved_status = dict(registry._status)
    plugins = FakePlugins(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    yield plugins
    for kind, reg in registry.ALL_REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(saved[kind])
    registry._status.clear()
    registry._status.update(saved_status)
    for module in plugins.modules:
        sys.modules.pop(module, None)


def _plugin_lines(output: str, entry: str) -> list[str]:
    return [line for line in output.splitlines() if f"plugin '{entry}'" in line]


def _count_warnings(recorded, output: str, entry: str) -> int:
    """A plugin warning reaches the user either as a Python warning or as the CLI's clean line."""
    python = [w for w in recorded if issubclass(w.category, PluginWarning) and f"'{entry}'" in str(w.message)]
    return len(python) + len(_plugin_lines(output, entry))


def test_plugins_load_lazily_once_with_their_origin(fake_plugins):
    fake_plugins.add("good-demo", "2.5", "good_demo", "good_demo_plugin", GOOD)
    assert "good_demo_plugin" not in sys.modules  # nothing imported before a registry is used
    assert "demo_gsim_copy" in PRETEXTS.names()
    assert PRETEXTS.entry("demo_gsim_copy").origin == "good-demo 2.5"
    assert PRETEXTS.entry("gsim").origin == "built-in"
    PRETEXTS.names()
    TRANSFERS.get("finetune")
    assert fake_plugins.imports == ["good_demo_plugin"]  # imported exactly once
    status = {s.name: s for s in registry.plugin_status()}
    assert status["good_demo"].error is None and status["good_demo"].origin == "good-demo 2.5"


def test_plugin_origin_shows_in_list(fake_plugins):
    fake_plugins.add("good-demo", "2.5", "good_demo", "good_demo_plugin", GOOD)
    result = CliRunner().invoke(main, ["list", "pretexts"], env=WIDE)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "demo_gsim_copy" in line)
    assert "good-demo 2.5" in row and "GSIM again" in row
    assert "built-in" in next(line for line in result.output.splitlines() if " gsim " in line)


def test_import_error_warns_once_by_name_and_list_still_works(fake_plugins):
    fake_plugins.add("broken-demo", "1.0", "broken_demo", "broken_demo_plugin", BROKEN)
    fake_plugins.add("good-demo", "2.5", "good_demo", "good_demo_plugin", GOOD)
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["list", "pretexts"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert _count_warnings(recorded, result.output, "broken_demo") == 1
    (line,) = _plugin_lines(result.output, "broken_demo")  # the CLI prints it as one clean line
    assert line.startswith("warning: ssl-bench plugin 'broken_demo' (broken-demo 1.0) was not loaded")
    assert "ModuleNotFoundError" in line and "ssl_bench_no_such_module_xyz" in line
    assert "PluginWarning" not in result.output and "Traceback" not in result.output
    assert "gsim" in result.output and "demo_gsim_copy" in result.output  # the rest still works


def test_duplicate_name_warns_once_and_rolls_back_the_plugin(fake_plugins):
    fake_plugins.add("dup-demo", "0.3", "dup_demo", "dup_demo_plugin", DUPLICATE)
    with pytest.warns(PluginWarning) as recorded:
        names = PRETEXTS.names()
    messages = [str(w.message) for w in recorded if issubclass(w.category, PluginWarning)]
    assert len(messages) == 1
    assert "'dup_demo' (dup-demo 0.3)" in messages[0]
    assert "DuplicateNameError" in messages[0] and "'gsim' is already registered" in messages[0]
    assert "gsim" in names and PRETEXTS.get("gsim") is GrayScaleMapping
    assert PRETEXTS.entry("gsim").origin == "built-in"
    assert "dup_demo_transfer" not in TRANSFERS  # its earlier registration was rolled back
    status = {s.name: s for s in registry.plugin_status()}
    assert "DuplicateNameError" in status["dup_demo"].error


def test_broken_plugins_do_not_break_run(fake_plugins, tmp_path):
    fake_plugins.add("broken-demo", "1.0", "broken_demo", "broken_demo_plugin", BROKEN)
    fake_plugins.add("dup-demo", "0.3", "dup_demo", "dup_demo_plugin", DUPLICATE)
    out = tmp_path / "runs"
    args = ["run", "--pretext", "gsim", "--transfer", "finetune", "--profile", "smoke",
            "--folds", "2", "--fold", "0", "--epochs", "1", "--out", str(out), "--quiet"]
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert _count_warnings(recorded, result.output, "broken_demo") == 1
    assert _count_warnings(recorded, result.output, "dup_demo") == 1
    assert (out / "gsim-finetune" / "folds" / "0" / "metrics.json").is_file()


def test_verbose_list_shows_options_defaults_and_plugins(fake_plugins):
    fake_plugins.add("broken-demo", "1.0", "broken_demo", "broken_demo_plugin", BROKEN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(main, ["list", "--verbose"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "d = 0.2" in out and "kind: image" in out  # gsim's option, pretext kind
    assert "weight = 1.0" in out and "pretext kinds: image, embedding" in out  # multitask
    assert "in_chans" not in out and "cache_dir" not in out  # passed by the toolkit, not options
    assert "plugin broken_demo (broken-demo 1.0, module broken_demo_plugin): NOT loaded" in out


# ------------------------------------------------------------- the example plugin, installed
def _rotation_installed() -> bool:
    try:
        metadata.distribution("ssl-bench-rotation")
    except metadata.PackageNotFoundError:
        return False
    return any(ep.name == "rotation" for ep in registry.plugin_entry_points())


needs_rotation = pytest.mark.skipif(
    not _rotation_installed(), reason="example plugin not installed (pip install -e plugins/ssl-bench-rotation)"
)


@needs_rotation
def test_rotation_plugin_listed_with_its_origin():
    version = metadata.version("ssl-bench-rotation")
    result = CliRunner().invoke(main, ["list", "pretexts"], env=WIDE)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if " rotation " in line)
    assert f"ssl-bench-rotation {version}" in row and "Rotation prediction" in row


@needs_rotation
def test_rotation_plugin_runs_with_finetune(tmp_path):
    args = ["run", "--pretext", "rotation", "--transfer", "finetune", "--profile", "smoke",
            "--folds", "2", "--out", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(main, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rotation-finetune" / "summary.json").is_file()


EXITING = """
import sys
sys.exit(3)
"""


def test_a_plugin_that_exits_is_one_warning_and_the_rest_works(fake_plugins):
    """A plugin calling sys.exit() at import used to end every command with no output."""
    fake_plugins.add("exit-demo", "0.1", "exit_demo", "exit_demo_plugin", EXITING)
    fake_plugins.add("broken-demo", "1.0", "broken_demo", "broken_demo_plugin", BROKEN)
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["list", "pretexts"], env=WIDE)
    assert result.exit_code == 0, result.output
    (line,) = _plugin_lines(result.output, "exit_demo")
    assert "was not loaded: SystemExit: 3" in line
    assert _count_warnings(recorded, result.output, "broken_demo") == 1  # the other plugins' too
    assert "gsim" in result.output


HEAD = '''
import torch
from torch import nn

from ssl_bench.registry import CLASSIFIERS, TRANSFERS
from ssl_bench.transfer.base import TransferStrategy


@CLASSIFIERS.register("mean_intensity_head")
class MeanIntensityHead(nn.Module):
    """A logistic regression on an image's mean intensity: a classifier of the plugin's own."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)
        self.linear = nn.Linear(1, 1)

    @property
    def architecture(self):
        return {"name": self.name, "scale": self.scale}

    def forward(self, x):
        return self.linear(self.scale * x.float().mean(dim=(1, 2, 3)).unsqueeze(1))


@TRANSFERS.register("mean_intensity")
class MeanIntensity(TransferStrategy):
    """Fits the plugin's head with a few full-batch steps of the weighted BCE."""

    accepts = ("none",)

    def fit(self, ctx):
        head = MeanIntensityHead(scale=2.0).to(ctx.device)
        opt = torch.optim.SGD(head.parameters(), lr=0.5)
        x, y = ctx.images.float(), ctx.labels.unsqueeze(1)
        for _ in range(20):
            opt.zero_grad()
            ctx.bce(head(x), y).backward()
            opt.step()
        return head
'''


def test_predict_rebuilds_a_plugins_own_classifier(fake_plugins, tmp_path):
    """A plugin's transfer may return a classifier of its own: registered in CLASSIFIERS, its
    model.pt is rebuilt by ``ssl-bench predict`` like the toolkit's (it was a closed table)."""
    fake_plugins.add("head-demo", "0.2", "head_demo", "head_demo_plugin", HEAD)
    out = tmp_path / "runs"
    run = CliRunner().invoke(main, ["run", "--pretext", "none", "--transfer", "mean_intensity", "--profile", "smoke",
                                    "--folds", "2", "--out", str(out), "--quiet"], env=WIDE)
    assert run.exit_code == 0, run.output
    rundir = out / "none-mean_intensity"
    assert registry.CLASSIFIERS.entry("mean_intensity_head").origin == "head-demo 0.2"
    png = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((64, 32)) * 255).astype(np.uint8)).save(png)
    scored = CliRunner().invoke(main, ["predict", "--run", str(rundir), str(png), "--format", "json"], env=WIDE)
    assert scored.exit_code == 0, scored.output
    assert '"p_malignant"' in scored.output
    # without the plugin, the file names a classifier this ssl-bench does not know: one line
    registry.CLASSIFIERS.unregister("mean_intensity_head")
    missing = CliRunner().invoke(main, ["predict", "--run", str(rundir), str(png)], env=WIDE)
    assert missing.exit_code == 2
    assert "unknown classifier architecture 'mean_intensity_head'" in missing.output
    assert "install the plugin whose transfer trained it" in " ".join(missing.output.split())
