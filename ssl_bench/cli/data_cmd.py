"""``ssl-bench data synth|prepare|verify``: generate a dataset, fill the image cache, check a dataset."""
from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..config import Config, DataConfig, parse_image_size, parse_scalar, parse_set_option, set_value, validate
from ..console import make_console, progress_bar
from ..errors import ConfigError, UserError
from ..fileio import cannot_write, out_of_space_error

if TYPE_CHECKING:
    from ..data.cache import ShardedImages

out_console = make_console()
_DEFAULTS = DataConfig()
#: the release trees ``data synth --format dicom`` writes (``--layout``)
DICOM_LAYOUTS = ("inbreast", "cbis-ddsm", "vindr")


def dataset_options(f):
    """Options shared by ``prepare`` and ``verify``."""
    opts = [
        click.option("--dataset", default=_DEFAULTS.dataset, show_default=True,
                     help="Registered dataset (ssl-bench list datasets)."),
        click.option("--data-root", default=None, help="Folder of the dataset as its owners ship it."),
        click.option("--image-size", default="x".join(map(str, _DEFAULTS.image_size)), show_default=True,
                     help="HEIGHTxWIDTH of the preprocessed images."),
        click.option("--cache-dir", default=_DEFAULTS.cache_dir, show_default=True,
                     help="Folder of the decoded-image cache."),
        click.option("--workers", type=int, default=_DEFAULTS.workers, show_default=True,
                     help="Decoding processes (0: one per CPU core)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Dataset option, e.g. --set params.inbreast.birads3=benign"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_config(dataset, data_root, image_size, cache_dir, workers, on_bad_image, sets) -> Config:
    cfg = Config()
    set_value(cfg, "data.dataset", dataset)
    set_value(cfg, "data.root", data_root)
    cfg.data.image_size = parse_image_size(image_size, "--image-size")
    set_value(cfg, "data.cache_dir", cache_dir)
    set_value(cfg, "data.workers", workers)
    set_value(cfg, "data.on_bad_image", on_bad_image)
    for item in sets:
        key, value = parse_set_option(item)
        set_value(cfg, key, value)
    validate(cfg)  # as run's: --workers -1 is one line
    return cfg


@click.group("data")
def data() -> None:
    """Generate, prepare (decode + cache) and verify datasets."""


# ------------------------------------------------------------------------------------- synth


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--format", "fmt", type=click.Choice(["png", "dicom"]), default="png", show_default=True)
@click.option("--layout", type=click.Choice(["flat", *DICOM_LAYOUTS]), default=None,
              help="flat (PNGs + labels.csv), or a release tree of DICOM files: inbreast (AllDICOMs/ + "
                   "INbreast.csv), cbis-ddsm (case-description CSVs + CBIS-DDSM/, official Training/Test "
                   "split by patient) or vindr (breast-level_annotations.csv + images/, training/test split "
                   "by patient). Default: flat for png, inbreast for dicom.")
@click.option("--image-size", default="768x384", show_default=True, help="HEIGHTxWIDTH.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compress", type=click.Choice(["none", "rle", "j2k"]), default="none", show_default=True,
              help="DICOM transfer syntax: uncompressed, RLE Lossless or JPEG 2000 Lossless.")
@click.option("--bits-stored", type=click.Choice(["14", "16"]), default="14", show_default=True,
              help="DICOM BitsStored.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Generator option, repeatable. Every patient has 2-4 images, so n_benign + "
                   "n_malignant must lie between 2 and 4 x n_patients; e.g. --set params.synthetic.n_patients=20 "
                   "--set params.synthetic.n_benign=40 --set params.synthetic.n_malignant=14")
def synth(out, fmt, layout, image_size, seed, compress, bits_stored, sets) -> None:
    """Write the synthetic cohort as PNG files or as a DICOM release tree (INbreast, CBIS-DDSM,
    VinDr-Mammo)."""
    from ..data import synthetic_mammo

    layout = layout or ("flat" if fmt == "png" else "inbreast")
    if (fmt == "png") != (layout == "flat"):
        raise ConfigError(f"--format {fmt} --layout {layout} is not available; use "
                          f"--format png --layout flat or --format dicom --layout {'|'.join(DICOM_LAYOUTS)}")
    size = parse_image_size(image_size, "--image-size")
    kwargs = _generator_options(sets, synthetic_mammo.generate)
    defaults = inspect.signature(synthetic_mammo.generate).parameters
    try:
        total = sum(int(kwargs.get(k, defaults[k].default)) for k in ("n_benign", "n_malignant"))
    except (TypeError, ValueError):
        total = None  # generate() names the bad value below
    started = time.perf_counter()
    try:
        with progress_bar(transient=True, info=False) as bar:
            drawn = bar.add_task("drawing images", total=total)
            table, images = synthetic_mammo.generate(
                image_size=size, seed=seed, orientation="laterality" if fmt == "png" else "canonical",
                on_image=lambda: bar.advance(drawn), **kwargs)
            written = bar.add_task(f"writing {fmt} files", total=len(table))
            if fmt == "png":
                csv = synthetic_mammo.write_png_files(out, table, images, on_image=lambda: bar.advance(written))
                where = f"{csv} + {Path(out) / 'images'}/"
            else:
                writer, where = _dicom_writer(layout, Path(out))
                writer(out, images, table, bits_stored=int(bits_stored),
                       compress=None if compress == "none" else compress, on_image=lambda: bar.advance(written))
    except ValueError as exc:
        raise ConfigError(f"cannot generate the synthetic set: {exc}") from None
    except OSError as exc:  # every file is written whole (fileio.atomic_write) or not at all
        full = out_of_space_error(exc, exc.filename or out)
        if full is not None:
            raise full from None
        raise UserError(f"cannot write to --out {out}: {cannot_write(exc.filename or out, exc)}") from None
    out_console.print(f"wrote {len(table)} images ({fmt}, {layout}, {size[0]}x{size[1]}) to {where} "
                      f"in {time.perf_counter() - started:.1f} s", soft_wrap=True, markup=False)


def _dicom_writer(layout: str, out: Path):
    """The tree writer of a DICOM ``layout`` and what it writes, in words."""
    if layout == "inbreast":
        from ..data.inbreast_writer import write_inbreast_tree

        return write_inbreast_tree, f"{out / 'AllDICOMs'}/ + {out / 'INbreast.csv'}"
    if layout == "cbis-ddsm":
        from ..data.cbis_ddsm_writer import write_cbis_ddsm_tree

        return write_cbis_ddsm_tree, f"{out / 'CBIS-DDSM'}/ + {out}/*_case_description_*_set.csv"
    from ..data.vindr_writer import write_vindr_tree

    return write_vindr_tree, f"{out / 'images'}/ + {out / 'breast-level_annotations.csv'}"


def _generator_options(sets, generate) -> dict:
    fixed = ("image_size", "seed", "orientation", "on_image")
    valid = [p for p in inspect.signature(generate).parameters if p not in fixed]
    kwargs = {}
    for item in sets:
        key, value = parse_set_option(item)
        parts = key.split(".")
        if len(parts) != 3 or parts[:2] != ["params", "synthetic"]:
            raise ConfigError(f"--set {key}: data synth takes params.synthetic.<option> "
                              f"(options: {', '.join(valid)})")
        if parts[2] not in valid:
            raise ConfigError(f"unknown option '{parts[2]}' for the synthetic generator; valid: {', '.join(valid)}")
        kwargs[parts[2]] = parse_scalar(value)
    return kwargs


# ----------------------------------------------------------------------------------- prepare


@data.command("prepare")
@dataset_options
@click.option("--on-bad-image", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Stop with the list of bad inputs, or leave them out.")
def prepare(dataset, data_root, image_size, cache_dir, workers, sets, on_bad_image) -> None:
    """Decode and preprocess every image once into the cache's shards (later runs load it in
    seconds, memory-mapped); an interrupted prepare resumes at the first missing shard."""
    from ..data.loading import build_dataset

    cfg = build_config(dataset, data_root, image_size, cache_dir, workers, on_bad_image, sets)
    ds = build_dataset(cfg)
    started = time.perf_counter()
    loaded = ds.load()
    elapsed = time.perf_counter() - started
    table = _counts_table(f"dataset '{dataset}' prepared", loaded.samples)
    table.add_row("skipped inputs", str(len(loaded.skipped)))
    table.add_row("image size", f"{cfg.data.image_size[0]}x{cfg.data.image_size[1]}")
    table.add_row("cache", Text(str(Path(cfg.data.cache_dir).expanduser())))
    table.add_row("elapsed", f"{elapsed:.1f} s")
    out_console.print(table)
    for problem in loaded.skipped:
        out_console.print(f"[yellow]skipped[/] {escape(str(problem))}", soft_wrap=True, highlight=False, markup=True)


# ------------------------------------------------------------------------------------ verify


@data.command("verify")
@dataset_options
def verify(dataset, data_root, image_size, cache_dir, workers, sets) -> None:
    """Count images per class and patients, small and blank images, and list every problem; exit 1
    if there are problems (small or blank images load, so they are counted, not problems)."""
    from ..data.base import MammoDataset
    from ..data.cache import load_cached_images
    from ..data.image_checks import MIN_SIDE, check_images
    from ..data.loading import build_dataset

    cfg = build_config(dataset, data_root, image_size, cache_dir, workers, "skip", sets)
    ds = build_dataset(cfg)
    images: np.ndarray | ShardedImages
    if type(ds).load is MammoDataset.load:
        # scan + decode without load()'s checks, so that every problem is listed even when
        # no image is usable
        samples, problems = ds.scan()
        images, bad = load_cached_images(samples, ds.image_size, ds.cache_dir, workers=ds.workers)
        usable = ~samples["path"].isin({p.file for p in bad}).to_numpy()
        samples, images = samples[usable], images[usable]
        problems = problems + bad
    else:
        loaded = ds.load()
        samples, images, problems = loaded.samples, loaded.images, list(loaded.skipped)
    checks = check_images(samples, images)
    table = _counts_table(f"dataset '{dataset}'", samples)
    table.add_row(f"small (< {MIN_SIDE} px a side)", str(len(checks.small)))
    table.add_row("blank (one value)", str(len(checks.blank)))
    out_console.print(table)
    weak = checks.describe()
    if weak:
        out_console.print(f"[yellow]warning:[/] {escape(weak)}", soft_wrap=True, highlight=False)
    if problems:
        out_console.print(f"[bold red]{len(problems)} problem(s):[/]")
        for problem in problems:
            out_console.print(f"  - {problem}", soft_wrap=True, highlight=False, markup=False)
        click.get_current_context().exit(1)
    out_console.print("[green]no problems found[/]")


def _counts_table(title: str, samples) -> Table:
    labels = samples["label"].to_numpy(dtype=np.int64) if len(samples) else np.zeros(0, np.int64)
    table = Table(title=escape(title), show_header=False)  # the title names the user's dataset
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("images", str(len(samples)))
    table.add_row("benign (0)", str(int((labels == 0).sum())))
    table.add_row("malignant (1)", str(int((labels == 1).sum())))
    table.add_row("patients", str(samples["patient_id"].nunique() if len(samples) else 0))
    return table

