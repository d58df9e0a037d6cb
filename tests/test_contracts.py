"""The contract helper (ssl_bench.testing) on every built-in component, on deliberately broken
components (it must catch them), and on the dataset plugin written out in CONTRIBUTING.md."""
from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ssl_bench.config import PROFILES
from ssl_bench.errors import DataError
from ssl_bench.pretext.base import PretextBatch, PretextTask
from ssl_bench.pretext.gsim import GrayScaleMapping
from ssl_bench.registry import DATASETS, EXECUTORS, NETWORKS, PRETEXTS, TRANSFERS
from ssl_bench.testing import (
    ContractError,
    check_component,
    check_dataset,
    check_executor,
    check_network,
    check_pretext,
    check_transfer,
    isolated_registries,
)

ROOT = Path(__file__).resolve().parents[1]
COMPONENT_PACKAGES = ("ssl_bench.pretext", "ssl_bench.transfer", "ssl_bench.models", "ssl_bench.data",
                      "ssl_bench.bench.executors")


def _import_component_modules() -> None:
    """Import every module of the component packages, so that every built-in component is
    registered however the package __init__ files list them."""
    for package in COMPONENT_PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            try:
                importlib.import_module(f"{package}.{info.name}")
            except ImportError:  # an optional dependency (e.g. ray) missing: not ours to test here
                pass


def builtin(registry) -> list[str]:
    """Names whose component is defined inside the ssl_bench package."""
    return [n for n in registry.names() if registry.get(n).__module__.startswith("ssl_bench.")]


_import_component_modules()
SMOKE = PROFILES["smoke"]


def smoke_params(name: str) -> dict:
    return dict(SMOKE.get(f"params.{name}", {}))


# -------------------------------------------------------------------- every built-in component
@pytest.mark.parametrize("name", builtin(PRETEXTS))
def test_builtin_pretext_meets_contract(name):
    check_pretext(name)


#: transfers whose classifier is not a timm backbone: check_transfer reloads weights into
#: create_backbone(config.model.backbone), so their contract test reloads through model.pt instead
@pytest.mark.parametrize("name", builtin(TRANSFERS))
def test_builtin_transfer_meets_contract(name):
    check_transfer(name, **smoke_params(name))


@pytest.mark.parametrize("name", builtin(NETWORKS))
def test_builtin_network_meets_contract(name):
    check_network(name, **smoke_params(name))


@pytest.mark.parametrize("name", builtin(EXECUTORS))
def test_builtin_executor_meets_contract(name):
    check_executor(name)


def write_png_folder(root: Path, n: int = 8, size=(80, 48), csv_columns=("path", "label", "patient_id")) -> Path:
    """``n`` small PNG 'mammograms' (a bright half-ellipse on the left edge, 16-bit) under
    ``root/images`` and ``root/labels.csv``; labels alternate 0/1, two images per patient."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        tissue = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 <= 1
        img = np.where(tissue, 0.55 + 0.3 * rng.random((h, w)), 0.02 * rng.random((h, w)))
        name = f"images/case{i:02d}.png"
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(root / name)
        rows.append({"path": name, "label": i % 2, "patient_id": f"p{i // 2}"})
    table = pd.DataFrame(rows)[list(csv_columns)]
    table.to_csv(root / "labels.csv", index=False)
    return root


def _inbreast_root(tmp: Path) -> dict:
    import _trees

    rows = list(range(8))
    root = tmp / "inbreast"
    _trees.build_inbreast(root, rows=rows)
    sheet = root / "INbreast.csv"  # keep only the rows whose DICOMs were written
    raw = sheet.read_bytes().decode("latin-1")
    nl = "\r\n" if "\r\n" in raw else "\n"
    lines = raw.split(nl)
    sheet.write_bytes((nl.join([lines[0]] + [lines[i + 1] for i in rows]) + nl).encode("latin-1"))
    return {"root": str(root)}


def _cbis_root(tmp: Path) -> dict:
    import _trees

    _trees.build_cbis(tmp / "cbis")
    return {"root": str(tmp / "cbis")}


def _vindr_root(tmp: Path) -> dict:
    import _trees

    _trees.build_vindr(tmp / "vindr")
    return {"root": str(tmp / "vindr")}


def _manifest_root(tmp: Path) -> dict:
    write_png_folder(tmp / "manifest")
    return {"root": str(tmp / "manifest"), "csv": "labels.csv"}


# name -> builder of a tiny tree (kwargs for check_dataset); the real-data layouts come from the
# data tests' helpers (tests/_trees.py)
DATASET_TREES = {
    "synthetic": lambda tmp: smoke_params("synthetic"),
    "manifest": _manifest_root,
    "inbreast": _inbreast_root,
    "cbis_ddsm": _cbis_root,
    "vindr_mammo": _vindr_root,
    "folder": lambda tmp: {"root": str(_manifest_root(tmp)["root"])},  # the PNGs, labels.csv ignored
}


@pytest.mark.parametrize("name", builtin(DATASETS))
def test_builtin_dataset_meets_contract(name, tmp_path):
    build = DATASET_TREES.get(name)
    if build is None:
        try:
            check_dataset(name, cache_dir=str(tmp_path / "cache"))
        except DataError as exc:
            pytest.skip(f"dataset '{name}' needs real data ({exc}); add a tiny tree to DATASET_TREES")
        return
    try:
        kwargs = build(tmp_path)
    except (ImportError, AttributeError, FileNotFoundError) as exc:
        pytest.skip(f"no tiny '{name}' tree: the data tests' helper is unavailable ({type(exc).__name__}: {exc})")
    loaded = check_dataset(name, cache_dir=str(tmp_path / "cache"), **kwargs)
    assert len(loaded.samples) > 0


def test_check_component_dispatches_on_kind():
    assert isinstance(check_component("pretexts", "gsim", d=0.3), GrayScaleMapping)
    assert isinstance(check_component("pretext", GrayScaleMapping, backbone=None), GrayScaleMapping)
    with pytest.raises(ValueError, match="unknown component kind"):
        check_component("widgets", "x")


# ------------------------------------------------------------------ the helper catches breakage
def _register_pretext(name: str, cls) -> None:
    PRETEXTS.register(name, cls)


def test_catches_an_undocumented_component_and_an_option_without_default():
    with isolated_registries():

        class Undocumented(GrayScaleMapping):
            pass

        class NoDefault(GrayScaleMapping):
            """Documented."""

            def __init__(self, d):
                super().__init__(d)

        _register_pretext("undocumented_demo", Undocumented)
        _register_pretext("no_default_demo", NoDefault)
        with pytest.raises(ContractError, match="has no docstring"):
            check_pretext("undocumented_demo")
        with pytest.raises(ContractError, match="option 'd' has no default"):
            check_pretext(NoDefault)
    with pytest.raises(ContractError, match="not registered"):
        check_pretext(NoDefault)


class _InPlace(GrayScaleMapping):
    """Modifies its input in place."""

    def prepare(self, images, labels):
        images.mul_(0.5)
        return PretextBatch([images], images.clone())


class _Float64Loss(GrayScaleMapping):
    """Returns a float64 loss."""

    def loss(self, outputs, targets):
        return ((outputs[0].double() - targets.double()) ** 2).mean()


class _WrongTarget(GrayScaleMapping):
    """Image task whose target is half the size."""

    def prepare(self, images, labels):
        return PretextBatch([images], images[..., ::2, :])


class _NumpyRandom(GrayScaleMapping):
    """Draws noise from numpy (not reproducible under torch.manual_seed)."""

    def prepare(self, images, labels):
        noise = torch.from_numpy(np.random.rand(*images.shape).astype(np.float32))
        return PretextBatch([images + 0.01 * noise], images)


class _BadKind(PretextTask):
    """Unknown kind."""

    kind = "video"

    def prepare(self, images, labels):
        return PretextBatch([images], images)

    def loss(self, outputs, targets):
        return outputs[0].float().mean()


@pytest.mark.parametrize(
    "cls, message",
    [
        (_InPlace, "changed its input images in place"),
        (_Float64Loss, "must be float32"),
        (_WrongTarget, "targets must have the input's shape"),
        (_NumpyRandom, "not reproducible"),
        (_BadKind, "kind must be one of"),
    ],
)
def test_catches_broken_pretexts(cls, message):
    with isolated_registries():
        _register_pretext("broken_demo", cls)
        with pytest.raises(ContractError, match=message):
            check_pretext("broken_demo", backbone=None)


def test_catches_a_transfer_whose_classifier_has_the_wrong_output():
    from ssl_bench.transfer.finetune import FineTune

    class TwoLogits(FineTune):
        """Returns a two-logit classifier."""

        def fit(self, ctx):
            model = super().fit(ctx)
            model.reset_classifier(2)
            return model

    with isolated_registries():
        TRANSFERS.register("two_logits_demo", TwoLogits)
        with pytest.raises(ContractError, match=r"to \(B, 1\) logits"):
            check_transfer("two_logits_demo", pretexts=["none"])


def test_catches_a_network_that_changes_the_size():
    class Shrinks(torch.nn.Module):
        """Halves the image."""

        encoder_channels = 1

        def __init__(self, in_chans: int = 1, out_chans: int = 1):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1)

        def encode(self, x):
            return self.conv(x)

        def forward(self, x):
            return self.conv(x)

    with isolated_registries():
        NETWORKS.register("shrinks_demo", Shrinks)
        with pytest.raises(ContractError, match="must have the same shape"):
            check_network("shrinks_demo")


def test_catches_a_dataset_with_float32_images(tmp_path):
    from ssl_bench.data.synthetic import SyntheticMammography

    class Float32(SyntheticMammography):
        """Synthetic, but float32 images."""

        def load(self):
            loaded = super().load()
            loaded.images = loaded.images.astype(np.float32)
            return loaded

    with isolated_registries():
        DATASETS.register("float32_demo", Float32)
        with pytest.raises(ContractError, match="images must be float16"):
            check_dataset("float32_demo", cache_dir=str(tmp_path), **smoke_params("synthetic"))


# --------------------------------------------------------------- CONTRIBUTING.md's dataset plugin
def contributing_example(filename: str) -> str:
    """The code block that follows ``<!-- example: FILENAME -->`` in CONTRIBUTING.md."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    match = re.search(rf"<!-- example: {re.escape(filename)} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"CONTRIBUTING.md has no example {filename}"
    return match.group(1)


@pytest.fixture
def png_folder_plugin(tmp_path, monkeypatch):
    """CONTRIBUTING.md's dataset plugin, written to a module and imported (registration undone after)."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "ssl_bench_pngfolder.py").write_text(contributing_example("ssl_bench_pngfolder.py"))
    monkeypatch.syspath_prepend(str(folder))
    with isolated_registries():
        module = importlib.import_module("ssl_bench_pngfolder")
        yield module
    sys.modules.pop("ssl_bench_pngfolder", None)


def test_contributing_pyproject_declares_the_entry_point():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads(contributing_example("pyproject.toml"))
    entry = project["project"]["entry-points"]["ssl_bench.plugins"]
    assert entry == {"png_folder": "ssl_bench_pngfolder"}
    assert project["tool"]["setuptools"]["py-modules"] == ["ssl_bench_pngfolder"]


def test_contributing_dataset_plugin_meets_contract(png_folder_plugin, tmp_path):
    root = write_png_folder(tmp_path / "pngs", n=6)
    loaded = check_dataset("png_folder", root=str(root), cache_dir=str(tmp_path / "cache"))
    assert loaded.samples["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert loaded.samples["patient_id"].tolist() == ["p0", "p0", "p1", "p1", "p2", "p2"]
    # problems are listed, not raised one by one; 'skip' leaves them out
    (root / "images" / "case05.png").unlink()
    with open(root / "labels.csv", "a") as fh:
        fh.write("images/case00.png,2,p9\n")
    with pytest.raises(DataError, match=r"2 bad input\(s\)"):
        png_folder_plugin.PngFolder(root=str(root), image_size=(64, 32), cache_dir=str(tmp_path / "cache")).load()


def test_contributing_dataset_plugin_runs_end_to_end(png_folder_plugin, tmp_path):
    from ssl_bench.cli import main

    root = write_png_folder(tmp_path / "pngs", n=12)
    args = ["run", "--pretext", "gsim", "--transfer", "finetune", "--profile", "smoke", "--dataset", "png_folder",
            "--data-root", str(root), "--folds", "2", "--out", str(tmp_path / "runs"), "--quiet"]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200", "SSL_BENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "gsim-finetune" / "summary.json").is_file()
