"""``ssl-bench power``: the patients the next study needs, from finished pilot runs."""
from __future__ import annotations

from pathlib import Path

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from ..console import make_console
from ..errors import UserError
from ..fileio import atomic_write_text

out_console = make_console()


@click.command("power")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--delta", type=float, default=None,
              help="The AUC difference to detect (superiority), e.g. 0.02 for 2 points; with --margin, the "
                   "true difference assumed (default 0).")
@click.option("--power", "power_", type=float, default=0.8, show_default=True, help="The power wanted (1 - beta).")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="The test's level: two-sided for superiority, one-sided for non-inferiority.")
@click.option("--margin", type=float, default=None,
              help="Non-inferiority: show the method's AUC is not below the baseline's by more than this.")
@click.option("--baseline", default=None, metavar="NAME",
              help="The run every other is compared with (default: the first run given).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table as CSV (AUCs as fractions); nothing is written without it.")
def power(run_dirs, delta, power_, alpha, margin, baseline, out):
    """Patients the next study needs, from finished runs on the same patients (RUN_DIR...; a
    bench's output folder stands for its runs): for each run against the baseline, the patients
    for a two-sided test at --alpha to detect an AUC difference --delta with --power, or with
    --margin a one-sided non-inferiority test.

    From the runs' pooled AUCs and Obuchowski's patient-clustered variances and covariance
    (the leaderboard's test), per patient: a study of n patients has variance / n. Assumes the
    study's patients have the pilot's case mix (prevalence, images per patient), one variance
    for the null and the alternative, the normal approximation, and one comparison (for several,
    divide --alpha by their number).
    """
    # scikit-learn and pandas load only when a command runs, so --help stays fast
    from ..report.power import check_design, power_table
    from ..report.runs import find_runs, load_run

    check_design(delta, power_, alpha, margin)  # before the runs are read: a mistake costs nothing
    dirs, notes = find_runs(list(run_dirs))
    runs = [load_run(d) for d in dirs]
    if len(runs) < 2:
        raise UserError(f"a power analysis needs two runs on the same patients (a method and the baseline), "
                        f"got {len(runs)}: {', '.join(map(str, dirs))}")
    base = runs[0] if baseline is None else next((r for r in runs if r.method == baseline), None)
    if base is None:
        raise UserError(f"--baseline {baseline}: no such run among {', '.join(r.method for r in runs)}")
    table = power_table(runs, base, delta, power_, alpha, margin)
    for note in notes:
        click.echo(note, err=True)
    design = (f"non-inferiority within {margin:g} (one-sided, alpha {alpha:g}), true difference {delta or 0:g}"
              if margin is not None else f"superiority: AUC difference {delta:g} (two-sided, alpha {alpha:g})")
    shown = Table(title=escape(f"Patients needed against {base.method}: {design}, power {power_:g}"),
                  box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("Method", "AUC", "Baseline AUC", "Δ AUC", "r", "SD of Δ per patient", "Pilot patients",
                   "Pilot power", "Patients needed", "≈ images", "≈ malignant patients"):
        shown.add_column(column, justify="left" if column == "Method" else "right")
    for row in table.itertuples(index=False):
        shown.add_row(escape(row.method), f"{row.auc:.3f}", f"{row.auc_baseline:.3f}", f"{row.auc_diff:+.3f}",
                      f"{row.correlation:.2f}", f"{row.sd_diff:.3f}", str(row.pilot_patients),
                      f"{row.pilot_power:.2f}", f"[bold]{row.patients}[/]", str(row.images),
                      str(row.malignant_patients))
    out_console.print(shown)
    out_console.print(escape("Assumes the study's patients have the pilot's case mix (prevalence, images per "
                             "patient), its variance components, and the normal approximation; with several "
                             "methods, divide --alpha by their number."), highlight=False, soft_wrap=True)
    if out is not None:
        try:
            atomic_write_text(out, table.to_csv(index=False, float_format="%.6g"))
        except OSError as exc:  # a full disk is OutOfSpace, one line of its own
            raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
        click.echo(f"wrote {out}", err=True)
