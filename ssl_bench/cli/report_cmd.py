"""``ssl-bench report``: the leaderboard of finished runs as markdown, CSV or a self-contained HTML."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..experiment.metric_specs import sortable


def sort_by_help() -> str:
    """``--sort-by``'s help: every sort key of the metric table, fold means and pooled ones."""
    folds = ", ".join(spec.name for spec in sortable() if not spec.pooled)
    pooled = ", ".join(spec.name for spec in sortable() if spec.pooled)
    return f"Metric to sort by, best first: {folds} (fold means) or {pooled} (pooled; pooled_auc or oof for oof_auc)."


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]), default="md", show_default=True,
              help="md: markdown (rendered in the terminal without --out); csv; html (needs --out).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of the terminal. md also writes the ROC figure "
                   "(<out>_roc.png/.svg) beside it; html embeds it.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the files bench leaves beside its runs into this folder instead: "
                   "leaderboard.md/.csv/.html, the figures, subgroups.csv and, with external runs, "
                   "external.csv (ssl-bench report bench-runs/external --out-dir bench-runs/external).")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference numbers to show beside ours, e.g. benchmarks/table2_paper.csv.")
@click.option("--baseline", default=None,
              help="Method the p-values compare against (default: ResNet when among the runs; patients "
                   "as the unit: Obuchowski's clustered test for AUC, paired patient bootstrap for "
                   "accuracy; raw and Holm-adjusted).")
@click.option("--control", default="Non-spatial", show_default=True,
              help="The non-spatial control row: each method is marked as beating it or not.")
@click.option("--aggregate", type=click.Choice(["mean", "max"]), default="mean", show_default=True,
              help="How a breast's (a patient's) image scores combine for breast- and patient-level AUC.")
@click.option("--n-boot", type=int, default=1000, show_default=True,
              help="Patient-bootstrap resamples for confidence intervals and the accuracy test.")
@click.option("--sort-by", default="oof_auc", show_default=True, help=sort_by_help())
@click.option("--allow-edited", is_flag=True,
              help="Report runs whose results were edited after the run (recomputed from predictions.csv).")
@click.option("--allow-mixed", is_flag=True,
              help="Report runs that differ in dataset, folds, split, seed or images anyway.")
def report(run_dirs, fmt, out, out_dir, reference, baseline, control, aggregate, n_boot, sort_by, allow_edited,
           allow_mixed):
    """Leaderboard of RUN_DIR... (run directories of `ssl-bench run` / `bench`; a bench's output
    folder, e.g. bench-runs/table2, stands for the runs inside it), with ROC figure, significance
    against a baseline, per-fold results and provenance. Among external runs (--test-dataset, a
    bench's external study) and the cross-validations trained as they were, the leaderboard ranks
    one comparable group of cross-validations and the External validation section sets each
    external AUC against its internal one."""
    # scikit-learn and matplotlib load only when a command runs, so --help stays fast
    from ..report.leaderboard import DEFAULT_BASELINE, build_report
    from ..report.publish import write_leaderboard, write_report
    from ..report.render import print_report, to_csv

    if out_dir is not None and (out is not None or fmt != "md"):
        raise UserError("--out-dir writes every format into a folder; give it without --out and --format")
    if fmt == "html" and out is None:
        raise UserError("--format html needs --out FILE.html (the page is written to a file)")
    rep = build_report(run_dirs, reference=reference, baseline=baseline or DEFAULT_BASELINE,
                       baseline_required=baseline is not None, sort_by=sort_by,
                       allow_mixed=allow_mixed, allow_edited=allow_edited, n_boot=n_boot,
                       control=control, aggregate=aggregate)
    if out_dir is not None:
        written = write_leaderboard(rep, out_dir)
        click.echo(f"wrote {written['md']} and the leaderboard's other files in {out_dir}", err=True)
        return
    if out is None:
        if fmt == "csv":
            click.echo(to_csv(rep), nl=False)
        else:
            print_report(rep)
        return
    write_report(rep, out, fmt)
    click.echo(f"wrote {out}", err=True)
