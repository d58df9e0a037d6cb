"""``ssl-bench predict``: malignancy probabilities for new images from a finished run."""
from __future__ import annotations

import json

import click
import numpy as np
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..console import make_console
from ..errors import UserError
from ..fileio import atomic_write_text, cannot_write


@click.command("predict")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="A run directory.")
@click.argument("images", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write csv/json here instead of stdout (its folder is made if missing).")
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False), default=None,
              help="Also write a Grad-CAM overlay of each image (the fold models' mean map) to this "
                   "folder, <name>.gradcam.png; the table gets its path.")
@click.option("--device", default="auto", show_default=True)
def predict(run_dir, images, fmt, out, explain_dir, device):
    """Score IMAGE files (DICOM, PNG, TIFF): mean probability of malignancy over the run's fold
    models, the same calibrated by each fold's calibrator (fitted on its training images), the
    call at the run's operating point (threshold chosen on the training folds), and each fold's
    probability. Files are always scored, with a warning line when the run is partial,
    was trained with the smoke profile or is degenerate in every fold, and for each file that does
    not look like one mammogram view (e.g. several views side by side). With --explain, where the
    classifier looked (Grad-CAM on its timm backbone's last feature map; not for ViTs, the k-NN
    probe, the non-spatial control or a multiview run: then one warning line, the scores stand).
    A multiview run pairs the files into breasts by their DICOM tags (PatientID, ImageLaterality,
    ViewPosition); a file without them is scored as a one-view breast."""
    from ..experiment.inference import predict_files
    from ..experiment.saliency import NoSaliency, explain_files
    from ..training.device import resolve_device

    err = make_console(stderr=True)

    def warn(text: str) -> None:
        err.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)

    table = predict_files(run_dir, list(images), resolve_device(device), on_warning=warn)
    if explain_dir is not None:
        try:
            table["explanation"] = [str(p) for p in explain_files(run_dir, list(images), explain_dir,
                                                                  resolve_device(device))]
        except NoSaliency as exc:  # the scores stand; the overlays are an extra
            warn(f"no Grad-CAM overlays: {exc}")
    if fmt == "table" and out is None:
        view = Table(title=f"malignancy probability ({escape(str(run_dir))})")
        for col in table.columns:
            view.add_column(col, justify="left" if col == "file" else "right")
        for row in table.itertuples(index=False):
            view.add_row(Text(str(row[0])), *(("yes" if v else "no") if isinstance(v, (bool, np.bool_))
                                              else Text(v) if isinstance(v, str) else f"{v:.4f}" for v in row[1:]))
        make_console().print(view)
        return
    text = (
        json.dumps(table.to_dict(orient="records"), indent=2) + "\n"
        if fmt == "json"
        else table.to_csv(index=False)
    )
    if out:  # whole or not at all; a missing folder is made, as report and run make theirs
        try:
            atomic_write_text(out, text)
        except OSError as exc:  # a full disk is fileio.OutOfSpace, exit 1
            raise UserError(f"cannot write --out {out}: {cannot_write(out, exc)}") from None
    else:
        click.echo(text, nl=False)
