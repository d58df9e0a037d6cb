"""``ssl-bench explain``: Grad-CAM overlays of a finished run's most confident hits and mistakes."""
from __future__ import annotations

import click
from rich.markup import escape

from ..console import make_console


@click.command("explain", short_help="Grad-CAM overlays of a run's most confident hits and mistakes.")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--top", default=3, show_default=True, type=int,
              help="Images per kind: true positives, false positives, false negatives.")
@click.option("--device", default="auto", show_default=True)
def explain(runs, top, device):
    """Write Grad-CAM overlays (Selvaraju et al. 2017) of each RUN's most confident true positives,
    false positives and false negatives among its held-out images (each called at its fold's
    operating point and explained by the fold model that held it out) to RUN/saliency/, which the
    HTML report of the run shows. Needs the run's fold models and its dataset where the run read
    it; a classifier without a convolutional timm backbone (a ViT, the k-NN probe, the
    non-spatial control) is one line. `ssl-bench bench` does this for its runs at its end."""
    from ..experiment.saliency import explain_run
    from ..training.device import resolve_device

    out = make_console(stderr=True)
    for run in runs:
        table = explain_run(run, resolve_device(device), top)
        counts = ", ".join(f"{int((table['kind'] == k).sum())} {k.upper()}" for k in ("tp", "fp", "fn"))
        out.print(f"{escape(str(run))}: wrote {len(table)} overlays ({counts}) to {escape(str(run))}/saliency/",
                  highlight=False, soft_wrap=True)
