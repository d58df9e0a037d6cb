"""``ssl-bench export``: a finished run's backbone as a timm state dict in safetensors, with its provenance."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..fileio import cannot_write


@click.command("export")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A run directory.")
@click.option("--fold", type=int, default=None, help="The fold whose backbone to export (default: the first trained).")
@click.option("--stage", type=click.Choice(["pretext", "finetuned"]), default=None,
              help="pretext: the backbone as the pretext stage left it (kept by linear/knn runs and "
                   "--pretext-data runs), its head dropped; finetuned: as the downstream stage trained it, "
                   "its malignancy head kept. Default: the backbone the fold's classifier scores with.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write (NAME.safetensors); its provenance goes beside it as NAME.json.")
def export(run_dir, fold, stage, out):
    """Write a fold's trained backbone as a timm state dict in safetensors, with a JSON of its
    provenance (pretext, dataset, folds, image size, input normalisation). It loads in timm
    (the printed timm.create_model call) and in another run (--pretrained PATH), computing what
    the fold's backbone computes."""
    # torch and timm load only when a command runs, so --help stays fast
    from ..experiment.backbone_export import export_backbone, timm_load_call

    try:
        done = export_backbone(run_dir, out, fold=fold, stage=stage)
    except OSError as exc:  # a full disk is fileio.OutOfSpace, exit 1
        raise UserError(f"cannot write --out {out}: {cannot_write(out, exc)}") from None
    p = done.provenance
    click.echo(f"wrote {done.path} ({p['backbone']}, {p['stage']} stage of fold {p['data']['fold']}, "
               f"{p['in_chans']} input channel{'s' if p['in_chans'] != 1 else ''}) and {done.sidecar}")
    click.echo(f"timm: {timm_load_call(p, done.path)}")
    click.echo(f"another run: ssl-bench run --backbone {p['backbone']} --pretrained {done.path} ...")
