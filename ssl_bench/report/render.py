"""Rendering a :class:`~ssl_bench.report.leaderboard.Report` as markdown (files and the terminal, via
rich) and CSV. The display tables built here (strings, percent with two decimals) are shared with
the HTML page (:mod:`ssl_bench.report.html`), so every output shows the same numbers.
"""
from __future__ import annotations

import io
import math
import re
from typing import Any, Sequence

import pandas as pd
from rich import box
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from ..console import make_console
from ..experiment.metric_specs import MetricSpec, in_sentence, metric_specs, sort_spec
from .leaderboard import REFERENCE_LABEL, Report, reference_comparison
from .axes import AXES, Axis, baseline_curve, has_curve
from .runs import dataset_summary, provenance_table, run_dates


SECTIONS = ("leaderboard", "notes", "external", "threshold", "clinical", "figure", "calibration", "subgroups",
            "saliency", "axes", "reference", "folds", "provenance")
EFFICIENCY_NOTE = ("Pooled out-of-fold AUC (percent) with its patient-clustered 95% CI (Obuchowski) "
                   "for each label fraction: the share of each fold's training patients used, the same "
                   "in each class (rounded up), nested across fractions, on the same held-out folds. "
                   "Train images and patients: mean per fold. With a baseline, each method is "
                   "compared with the baseline's curve at the same fraction on the same images "
                   "(Obuchowski's clustered test; Holm-adjusted over the methods at that fraction).")
RESOLUTION_NOTE = ("Pooled out-of-fold AUC (percent) with its patient-clustered 95% CI (Obuchowski) "
                   "for each image size (height x width in pixels) the images were resized to, on the "
                   "same held-out folds. With a baseline, each method is compared with the baseline's "
                   "curve at the same size on the same images (Obuchowski's clustered test; "
                   "Holm-adjusted over the methods at that size).")
#: per study axis (:mod:`.axes`): the note under its heading, its figure's alternative text in
#: markdown, and its columns as shown (title, the table's column, how a value reads), before the
#: pooled AUC
AXIS_NOTES = {"label_efficiency": EFFICIENCY_NOTE, "resolution": RESOLUTION_NOTE}
AXIS_ALT = {"label_efficiency": "Label-efficiency curves", "resolution": "Resolution curves"}
AXIS_COLUMNS: dict[str, tuple[tuple[str, str, Any], ...]] = {
    "label_efficiency": (("Label fraction", "label_fraction", lambda v: f"{v:g}"),
                         ("Train images/fold", "n_train_images", lambda v: fmt_value(v, 1)),
                         ("Train patients/fold", "n_train_patients", lambda v: fmt_value(v, 1))),
    "resolution": (("Image size", "image_size", str),),
}
P_NOTE = "raw, with Holm-adjusted values in brackets"
EXTERNAL_NOTE = ("Internal: pooled out-of-fold AUC (percent) of the cross-validation on the training cohort "
                 "(the leaderboard's, for its first cohort). External: AUC of the model trained on all of "
                 "the training cohort, on every image of the test cohort. Both with patient-clustered 95% "
                 "CIs (Obuchowski). Drop: internal minus external (points), its 95% CI and two-sided p from "
                 "var(drop) = var(internal) + var(external), the two samples holding different patients.")
DECISION_NOTE = ("Decisions per breast and per patient, pooled over the folds with patient-bootstrap 95% "
                 "intervals: a breast (a patient) is called malignant when the {aggregate} of its images' "
                 "scores reaches its fold's operating threshold (chosen on the training predictions). "
                 "Breast pF1: the probabilistic F1 of the RSNA 2023 screening challenge over breasts, each "
                 "counting by its probability of malignancy (calibrated where the run recorded it).")
CLINICAL_NOTE = ("Pooled over all held-out images of all folds, with patient-clustered 95% confidence "
                 "intervals. Breast and patient level: the {aggregate} of a breast's (a patient's) image "
                 "scores. Op. sens./spec.: at each fold's operating point, chosen on that fold's training "
                 "predictions (Youden), never on the held-out fold.")
TEXT_COLUMNS = frozenset({"Method", "Source", "Warning", "Run", "Metric"})


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_value(v: Any, digits: int = 2, signed: bool = False) -> str:
    if _nan(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_mean_std(mean: Any, std: Any, digits: int = 2) -> str:
    if _nan(mean):
        return "–"
    return f"{mean:.{digits}f}" if _nan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_ci(v: Any, lo: Any, hi: Any) -> str:
    if _nan(v):
        return "–"
    return f"{v:.2f}" if _nan(lo) or _nan(hi) else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def fmt_p(p: Any) -> str:
    if _nan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def describe_setup(report: Report) -> str:
    """One line: dataset and size per class, split, folds, seed, sort order."""
    ds = dataset_summary(report.runs)
    run = report.runs[0]
    split = {"patient": "patient-grouped", "image": "image-level"}.get(run.data.get("split", ""))
    sort = sort_title(report.sort_by)
    n = len(report.runs)
    return (f"{n} method{'s' if n != 1 else ''} · profile {profiles(report)} · dataset {ds['name']}: "
            f"{ds['n_images']} images ({ds['n_benign']} benign, {ds['n_malignant']} malignant), "
            f"{ds['n_patients']} patients · "
            f"{split or run.data.get('split', '?')} stratified {run.n_folds}-fold cross-validation · "
            f"seed {run.config.get('seed', '?')}"
            f" · sorted by {sort}")


def sort_title(key: str) -> str:
    """How the setup line names a sort key: a pooled metric's title, a fold metric's mean."""
    spec = sort_spec(key)
    if spec is None:
        return key
    return in_sentence(spec.title) if spec.pooled else f"mean fold {in_sentence(spec.title)}"


def profiles(report: Report) -> str:
    """The settings profile of the runs (``smoke``, ``quick``, ``paper``; several joined by ``/``)."""
    return "/".join(dict.fromkeys(str(r.config.get("profile") or "?") for r in report.runs))


def title(report: Report) -> str:
    """The report's title: the dataset and the profile, which decide what its numbers mean."""
    return f"Leaderboard: {report.dataset} · profile {profiles(report)}"


_SPLITS = {"patient": "grouped by patient (--split patient)", "image": "image-level (--split image)"}
REFERENCE_NOTE = ("The TSBN paper's Table II on INbreast (percent; its AUC read off Fig. 4, compared "
                  "with our pooled AUC) beside ours; 'ours - paper' in percentage points.")
UNITS = ("Values in percent. Pooled AUC over all out-of-fold predictions, with a 95% patient-clustered "
         "confidence interval (Obuchowski 1997, logit); operating-point sensitivity and specificity pooled "
         "over the folds, each fold's threshold chosen on its own training predictions (Youden), never on "
         "the held-out fold, with patient-bootstrap intervals. Figures at the paper's threshold 0.5 "
         "follow in a table of their own.")
THRESHOLD_NOTE = ("Mean ± sample std (ddof=1) over folds, at the paper's fixed threshold 0.5 (AUC: "
                  "each fold's, then averaged). With the paper's malignant weight 15, a model may call "
                  "nearly every image malignant at 0.5: read sensitivity with specificity, and these "
                  "figures after the operating-point ones above.")
CALIBRATION_NOTE = ("Expected calibration error (ECE, percentage points: the mean gap between predicted "
                    "probability and observed rate over ten equal-width bins, weighted by their images; "
                    "Naeini et al. 2015) of the pooled out-of-fold probabilities: raw, and calibrated by "
                    "Platt scaling fitted on each fold's training images, never on its held-out images "
                    "(predictions.csv 'calibrated'; ssl-bench predict's p_calibrated). Lower is better; a "
                    "calibrator fitted on training scores, which are more extreme than held-out ones, "
                    "may not help.")
SALIENCY_NOTE = ("Where each method looked (Grad-CAM, Selvaraju et al. 2017, on its backbone's last feature "
                 "map; red: what raised the probability of malignancy most) in its most confident true "
                 "positives, false positives and false negatives among the held-out images, each called at its "
                 "fold's operating point and explained by the fold model that held it out (ssl-bench explain; "
                 "files in each run's saliency/ folder).")
SALIENCY_KINDS = {"tp": "True positive", "fp": "False positive", "fn": "False negative"}
SUBGROUP_TITLES = {"view": "View", "laterality": "Laterality", "density": "Breast density (ACR)",
                   "lesion_type": "Lesion type", "manufacturer": "Manufacturer"}
SUBGROUP_NOTE = ("Pooled out-of-fold AUC of the images of each subgroup, with its patient-clustered 95% CI "
                 "(Obuchowski); the column heads give the subgroup's images and malignant images. "
                 "p heterogeneity: the Wald test that the subgroup AUCs of a method are equal (chi-square, "
                 "subgroups minus one degrees of freedom), the covariance of subgroups that share patients "
                 "(a woman's CC and MLO views) included; raw p-values, one question per variable. n/a: the "
                 "subgroup holds one class. Images whose dataset does not record the variable are left out.")


# ---------------------------------------------------------------------------------------------
# display tables (strings)


def leaderboard_display(report: Report) -> pd.DataFrame:
    """The leaderboard's first table, what reads honestly at a glance: pooled AUC with its CI, the
    operating point's sensitivity and specificity, the test against the baseline and the control,
    degenerate folds. The threshold-0.5 figures are :func:`threshold_display`'s."""
    t = report.table
    out = pd.DataFrame({"#": [str(i + 1) for i in range(len(t))], "Method": t["method"],
                        "Folds": [f"{d}/{n}" for d, n in zip(t["folds_done"], t["folds_total"])]})
    for spec in metric_specs("leaderboard", pooled=True):
        out[with_ci(spec)] = [fmt_ci(*v) for v in zip(t[spec.name], t[f"{spec.name}_lo"], t[f"{spec.name}_hi"])]
    if report.has_p_values:
        out[f"p AUC vs {report.baseline}"] = ["baseline" if m == report.baseline else fmt_p_holm(p, h)
                                              for m, p, h in zip(t["method"], t["p_auc"], t["p_auc_holm"])]
    if report.control is not None:
        out[f"vs {report.control}"] = [_versus_control(r, b, d, p) for r, b, d, p in zip(
            t["role"], t["beats_control"], t["control_auc_diff"], t["control_p_auc_holm"])]
    if t["degenerate"].astype(int).any():
        out["Degenerate folds"] = [", ".join(map(str, r.degenerate)) for r in report.runs]
    if t["warning"].astype(bool).any():
        out["Warning"] = t["warning"]
    return out


def threshold_display(report: Report) -> pd.DataFrame:
    """The leaderboard's second table: each metric at the paper's threshold 0.5, mean ± std over
    folds, and the paired accuracy test against the baseline."""
    t = report.table
    out = pd.DataFrame({"Method": t["method"]})
    for spec in metric_specs("threshold", pooled=False):
        out[spec.title] = [fmt_mean_std(a, b) for a, b in zip(t[f"{spec.name}_mean"], t[f"{spec.name}_std"])]
    if report.has_p_values:
        out[f"p Acc. vs {report.baseline}"] = ["baseline" if m == report.baseline else fmt_p_holm(p, h)
                                               for m, p, h in zip(t["method"], t["p_accuracy"], t["p_accuracy_holm"])]
    return out


def eligible_for_best(report: Report) -> pd.Series:
    """Rows whose values may be marked best: not the control, and no degenerate fold (a model that
    calls nearly every image malignant has the 'best' sensitivity and says nothing by it)."""
    t = report.table
    return (t["role"] != "control") & (t["degenerate"].astype(int) == 0)


def _versus_control(role: str, beats: Any, diff: Any, p_holm: Any) -> str:
    if role == "control":
        return "control"
    if _nan(beats):
        return "n/a"
    return f"{'beats' if beats else 'no'} ({100 * diff:+.1f} pts, p {fmt_p(p_holm)})"


def fmt_p_holm(p: Any, holm: Any) -> str:
    return "n/a" if _nan(p) else f"{fmt_p(p)} [{fmt_p(holm)}]"


def with_ci(spec: MetricSpec) -> str:
    """The leaderboard's head of a pooled metric shown with its interval."""
    return f"{spec.title} [95% CI]"


def intervals_display(report: Report, table: str) -> pd.DataFrame:
    """``Method`` and, for each pooled metric of ``table``, the value with its 95% interval."""
    t = report.table
    out = pd.DataFrame({"Method": t["method"]})
    for spec in metric_specs(table, pooled=True):
        out[spec.title] = [fmt_ci(*v) for v in zip(t[spec.name], t[f"{spec.name}_lo"], t[f"{spec.name}_hi"])]
    return out


def clinical_display(report: Report) -> pd.DataFrame:
    """Pooled metrics clinicians read, each with its patient-clustered 95% CI."""
    return intervals_display(report, "clinical")


def decisions_display(report: Report) -> pd.DataFrame:
    """Breast- and patient-level decisions at the operating point and the breast-level pF1."""
    return intervals_display(report, "decisions")


def calibration_display(report: Report) -> pd.DataFrame:
    """Each method's ECE of its raw and of its calibrated probabilities (percentage points)."""
    t = report.table
    return pd.DataFrame({"Method": t["method"], "ECE raw": [fmt_value(v) for v in t["ece"]],
                         "ECE calibrated": [fmt_value(v) for v in t["ece_calibrated"]]})


def subgroup_displays(report: Report) -> list[tuple[str, pd.DataFrame]]:
    """One table per subgroup variable: a row per method, a column per subgroup (pooled AUC
    [95% CI]) and the heterogeneity p-value; ``(title, table)`` in variable order."""
    t = report.subgroups
    if t is None:
        return []
    out = []
    for variable, rows in t.groupby("variable", sort=False):
        counts = rows.drop_duplicates("subgroup").set_index("subgroup")
        heads = {g: f"{g} ({int(counts.at[g, 'n_images'])}, {int(counts.at[g, 'n_malignant'])} mal.)"
                 for g in counts.index}
        table = []
        for method, own in rows.groupby("method", sort=False):
            row = {"Method": method}
            for r in own.itertuples(index=False):
                row[heads.get(r.subgroup, r.subgroup)] = "n/a" if _nan(r.auc) else fmt_ci(r.auc, r.auc_lo, r.auc_hi)
            row["p heterogeneity"] = fmt_p(own["p_heterogeneity"].iloc[0])
            table.append(row)
        out.append((SUBGROUP_TITLES.get(str(variable), str(variable)), pd.DataFrame(table).fillna("–")))
    return out


def saliency_display(report: Report) -> pd.DataFrame:
    """Every overlay the runs hold: method, kind, image, fold, probability and the file (relative to
    the folder holding the run)."""
    rows = []
    for run in report.runs:
        if run.saliency is None:
            continue
        for r in run.saliency.itertuples(index=False):
            rows.append({"Method": run.method, "Kind": SALIENCY_KINDS.get(str(r.kind), str(r.kind)),
                         "Image": r.image_id, "Fold": str(r.fold), "p malignant": f"{r.score:.3f}",
                         "Overlay": f"{run.path.name}/{r.file}"})
    return pd.DataFrame(rows)


def reference_display(report: Report) -> pd.DataFrame:
    ref = reference_comparison(report)
    if ref.empty:
        return ref
    out = pd.DataFrame({"Method": ref["method"], "Source": ref["source"]})
    diff = ref["source"] == "ours - paper"
    for spec in metric_specs("threshold", pooled=False):
        if spec.name == "auc":  # the paper's AUC is a pooled one: beside ours, below
            continue
        out[spec.title] = [fmt_value(a, signed=True) if d else fmt_mean_std(a, b)
                           for a, b, d in zip(ref[f"{spec.name}_mean"], ref[f"{spec.name}_std"], diff)]
    out["Pooled AUC"] = [fmt_value(a, signed=d) for a, d in zip(ref["oof_auc"], diff)]
    return out


def per_fold_display(report: Report, method: str) -> pd.DataFrame:
    """One row per metric, one column per fold (missing folds marked), then mean ± std."""
    run = next(r for r in report.runs if r.method == method)
    df = report.per_fold[method]
    row = report.table.set_index("method").loc[method]
    names = [spec.name for spec in metric_specs("threshold", pooled=False)]
    out: dict[str, list[str]] = {"Metric": ["Images", "Malignant",
                                            *(spec.title for spec in metric_specs("threshold", pooled=False)),
                                            "Op. threshold", "Degenerate"]}
    for k in range(run.n_folds):
        if k in df.index:
            f = df.loc[k]
            out[f"Fold {k}"] = [str(int(f["n"])), str(int(f["n_malignant"])),
                                *(fmt_value(f[m]) for m in names), fmt_value(f["op_threshold"], 3),
                                f["degenerate"] or "no"]
        else:
            out[f"Fold {k}"] = ["missing", *(["–"] * (3 + len(names)))]
    out["Mean ± std"] = [f"Σ {int(df['n'].sum())}", f"Σ {int(df['n_malignant'].sum())}",
                         *(fmt_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in names),
                         "", f"{int(row['degenerate'])} of {len(df)}"]
    return pd.DataFrame(out)


def provenance_display(report: Report) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """Key facts shared by the runs, and one row per run (values that differ show per run)."""
    ds = dataset_summary(report.runs)
    run = report.runs[0]
    split = run.data.get("split", "?")
    facts = [
        ("Dataset", f"{ds['name']}: {ds['n_images']} images ({ds['n_benign']} benign, "
                    f"{ds['n_malignant']} malignant), {ds['n_patients']} patients (from {ds['source']})"),
        ("Split", f"{_SPLITS.get(split, split)}, stratified by label; {run.n_folds} folds, "
                  f"seed {run.config.get('seed', '?')}"),
        ("Run dates", run_dates(report.runs)),
    ]
    table = provenance_table(report.runs)
    per_run = [c for c in table.columns if c in ("method", "run") or table[c].astype(str).nunique() > 1]
    facts += [(c[0].upper() + c[1:], str(table[c].iloc[0])) for c in table.columns
              if c not in per_run and c != "finished"]  # a shared finish time is in the run dates
    table = table[per_run].rename(columns={c: c[0].upper() + c[1:] for c in per_run})
    return facts, table.astype(str)


# ---------------------------------------------------------------------------------------------
# blocks: the report as a sequence of headings, paragraphs, lists and tables, rendered to markdown
# (files) or rich renderables (terminal)


def axis_display(report: Report, axis: Axis) -> pd.DataFrame:
    """A study axis' table as shown: method, the value (label fraction with the training images and
    patients per fold; image size), pooled AUC [95% CI]; with a baseline, the difference from its
    curve at the same value and the p-value (Holm-adjusted in brackets)."""
    t = report.axes[axis.name]
    out = pd.DataFrame({"Method": t["method"]})
    for title_, column, shown in AXIS_COLUMNS[axis.name]:
        out[title_] = [shown(v) for v in t[column]]
    out["Pooled AUC [95% CI]"] = [fmt_ci(v, lo, hi) for v, lo, hi in zip(t["oof_auc"], t["oof_auc_lo"], t["oof_auc_hi"])]
    base = axis_baseline(report, axis)
    if base is not None:
        out[f"Δ AUC vs {base} (pts)"] = ["baseline" if m == base else fmt_value(d, 1, signed=True)
                                         for m, d in zip(t["method"], t["auc_diff"])]
        out["p AUC [Holm]"] = ["" if m == base else fmt_p_holm(p, h)
                               for m, p, h in zip(t["method"], t["p_auc"], t["p_auc_holm"])]
    return out


def external_display(report: Report) -> pd.DataFrame:
    """The external-validation table as shown: method, the cohorts, internal and external AUC
    [95% CI], the drop [95% CI] and its p-value, the patients of each sample."""
    t = report.external if report.external is not None else pd.DataFrame()
    return pd.DataFrame({
        "Method": t.get("method", []), "Trained on": t.get("train", []), "Tested on": t.get("test", []),
        "Internal AUC [95% CI]": [fmt_ci(*v) for v in zip(t.get("internal_auc", []), t.get("internal_auc_lo", []),
                                                          t.get("internal_auc_hi", []))],
        "External AUC [95% CI]": [fmt_ci(*v) for v in zip(t.get("external_auc", []), t.get("external_auc_lo", []),
                                                          t.get("external_auc_hi", []))],
        "Drop [95% CI]": [fmt_ci(*v) for v in zip(t.get("drop", []), t.get("drop_lo", []), t.get("drop_hi", []))],
        "p drop": [fmt_p(p) for p in t.get("p_drop", [])],
        "Patients int./ext.": [f"{a}/{b}" for a, b in zip(t.get("internal_patients", []),
                                                          t.get("external_patients", []))],
    })


def axis_baseline(report: Report, axis: Axis) -> str | None:
    """The curve of ``axis`` the others are tested against, if the report has one."""
    t = report.axes.get(axis.name)
    if report.baseline is None or t is None or "auc_diff" not in t:
        return None
    run = next((r for r in report.runs if r.method == report.baseline), None)
    return baseline_curve(t, str(run.path)) if run is not None else None


def curves(report: Report) -> list[Axis]:
    """The study axes along which the report's runs draw a curve (some method at two values or more)."""
    return [axis for axis in AXES if has_curve(report.axes.get(axis.name), axis)]


def report_blocks(report: Report, sections: Sequence[str] = SECTIONS, figure: str | None = None,
                  figures: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """``[(kind, content)]`` with kind ``h1``/``h2``/``h3``/``p``/``ul``/``table``/``img``. The text
    of headings, paragraphs and list items is markdown (names, paths and notes escaped,
    :func:`markdown_text`); a table is a frame of plain text, escaped by its renderer. ``figure``:
    the ROC PNG's relative path; ``figures``: those of the sections' figures by name."""
    figures = figures or {}
    blocks: list[tuple[str, Any]] = [("h1", markdown_text(title(report), block=True)),
                                     ("p", markdown_text(describe_setup(report) + ".", block=True)), ("p", UNITS)]
    if "leaderboard" in sections:
        blocks.append(("table", leaderboard_display(report)))
    if "notes" in sections and report.notes:
        blocks.append(("ul", [markdown_text(note, block=True) for note in report.notes]))
    if "external" in sections and report.external is not None:
        blocks += [("h2", "External validation"), ("p", EXTERNAL_NOTE), ("table", external_display(report))]
    if "threshold" in sections:
        blocks += [("h2", "At the paper's threshold 0.5"), ("p", THRESHOLD_NOTE), ("table", threshold_display(report))]
    if "clinical" in sections:
        blocks += [("h2", "Pooled metrics clinicians read"),
                   ("p", CLINICAL_NOTE.format(aggregate=report.aggregate)), ("table", clinical_display(report))]
    if "clinical" in sections:
        blocks += [("h2", "Decisions per breast and per patient"),
                   ("p", DECISION_NOTE.format(aggregate=report.aggregate)), ("table", decisions_display(report))]
        if figures.get("decision_curve"):
            blocks.append(("img", (figures["decision_curve"], "Decision curves per breast")))
    if "figure" in sections and figure:
        blocks.append(("img", figure))
    if "calibration" in sections and report.table["ece_calibrated"].notna().any():
        blocks += [("h2", "Calibration"), ("p", CALIBRATION_NOTE), ("table", calibration_display(report))]
        if figures.get("reliability"):
            blocks.append(("img", (figures["reliability"], "Reliability diagrams, raw and calibrated")))
    if "subgroups" in sections and report.subgroups is not None:
        blocks += [("h2", "Subgroups"), ("p", SUBGROUP_NOTE)]
        for heading, table in subgroup_displays(report):
            blocks += [("h3", heading), ("table", table)]
    if "saliency" in sections and any(r.saliency is not None for r in report.runs):
        blocks += [("h2", "Saliency"), ("p", SALIENCY_NOTE), ("table", saliency_display(report))]
    for axis in curves(report) if "axes" in sections else ():
        blocks += [("h2", axis.title), ("p", AXIS_NOTES[axis.name])]
        if figures.get(axis.name):
            blocks.append(("img", (figures[axis.name], AXIS_ALT[axis.name])))
        blocks.append(("table", axis_display(report, axis)))
    if "reference" in sections and report.reference is not None:
        blocks += [("h2", f"Reference: {REFERENCE_LABEL}"), ("p", REFERENCE_NOTE),
                   ("table", reference_display(report))]
    if "folds" in sections:
        blocks.append(("h2", "Per-fold results"))
        for run in report.runs:
            blocks += [("h3", markdown_text(run.method, block=True)), ("table", per_fold_display(report, run.method))]
    if "provenance" in sections:
        facts, table = provenance_display(report)
        blocks += [("h2", "Provenance"), ("ul", [f"**{markdown_text(k)}:** {markdown_text(v)}" for k, v in facts]),
                   ("table", table)]
    return blocks


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_text(text: Any, block: bool = False) -> str:
    """``text`` (a method or run name, a path, a note quoting them) as markdown that renders as
    exactly that text, on one line: a backslash before every character that markdown would read
    as markup there (CommonMark escapes any ASCII punctuation). Always ``\\ ` * < | ~`` (escapes,
    code, emphasis, HTML and autolinks, table cells, strikethrough); ``_`` unless it lies between
    two letters or digits (no emphasis there: ``cbis_ddsm`` stays as it is); ``]`` before ``(``,
    ``[`` or ``:`` (links, images, references); ``&`` of an entity (``&amp;``). ``block`` (the
    whole text of a heading or a list item): also what would open a block at its start (``#``,
    ``>``, ``-``, ``+``, ``=``, ``[ ]``, ``1.``) and a heading's closing ``#`` at its end. Our own
    text (``Pooled AUC [95% CI]``, ``paper (INbreast)``, a column ``#``) comes out as it went in.
    Leading and trailing spaces go, as markdown drops them."""
    s = re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()
    s = re.sub(r"([\\`*<|~])", r"\\\1", s)
    s = re.sub(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])", r"\\_", s)
    s = re.sub(r"\](?=[(\[:])", r"\\]", s)
    s = re.sub(r"&(?=#?[0-9A-Za-z]+;)", r"\\&", s)
    if block:
        s = re.sub(r"(?<!\S)#(?=#*$)", r"\\#", s)
        s = re.sub(r"^([#>\-+=\[])", r"\\\1", s)
        s = re.sub(r"^(\d+)([.)])", r"\1\\\2", s)
    return s


_NUMERIC = re.compile(r"^([-+]?[\d.]+( ± [\d.]+)?( \[[\d.]+, [\d.]+\])?|<[\d.]+|Σ \d+|\d+/\d+"
                      r"|[–-]|n/a|baseline|missing)?$")


def numeric_columns(df: pd.DataFrame) -> list[str]:
    """Columns to right-align: every value a number, mean ± std, CI or p-value."""
    return [c for c in df.columns if c not in TEXT_COLUMNS
            and df[c].astype(str).map(lambda v: bool(_NUMERIC.match(v))).all()]


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured pipe table; numeric columns right-aligned."""
    cols, right = list(df.columns), set(numeric_columns(df))
    head = "| " + " | ".join(markdown_text(c) for c in cols) + " |"
    rule = "|" + "|".join("---:" if c in right else ":---" for c in cols) + "|"
    cell = [_md_cell if c in right else markdown_text for c in cols]  # text: names, paths, notes
    body = ["| " + " | ".join(f(v) for f, v in zip(cell, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def to_markdown(report: Report, sections: Sequence[str] = SECTIONS, figure: str | None = None,
                figures: dict[str, str] | None = None) -> str:
    """The report as markdown; ``figure`` is a relative path of the ROC PNG to link, if any, and
    ``figures`` those of the sections' figures by name (``reliability``, ``decision_curve``, the
    study axes' ``label_efficiency`` and ``resolution``)."""
    out = []
    for kind, content in report_blocks(report, sections, figure, figures):
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            out.append(content)
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in content))
        elif kind == "table":
            out.append(markdown_table(content))
        elif kind == "img":
            path, alt = content if isinstance(content, tuple) else (content, "Pooled out-of-fold ROC curves")
            out.append(f"![{alt}]({path})")
    return "\n\n".join(out) + "\n"


_SHORT = {"Accuracy": "Acc.", "Sensitivity": "Sens.", "Specificity": "Spec.", "Malignant": "Mal.",
          "Pooled AUC [95% CI]": "Pooled AUC"}


def _rich_tables(df: pd.DataFrame, width: int) -> list[Any]:
    """Rich tables that keep every number whole in a terminal ``width`` columns wide. When one line
    per row does not fit, headers are abbreviated and ``mean ± std`` / ``AUC [CI]`` cells stack on
    two lines; when that does not fit either, the columns are split over several tables, each
    repeating the key columns (method, source, fold)."""
    free = {"Warning", "Run"}

    def col_width(frame: pd.DataFrame, c: str) -> int:
        cells = [len(line) for v in frame[c] for line in str(v).split("\n")]
        return max(cells, default=0) if c in free else max(cells + [len(str(c))])

    def fits(frame: pd.DataFrame, cols) -> bool:  # cells + 3 between columns (pad, rule, pad)
        fixed = [c for c in cols if c not in free]
        return sum(col_width(frame, c) for c in fixed) + 3 * (len(fixed) - 1) <= width

    right = set(numeric_columns(df))
    if not fits(df, df.columns):
        short = {c: _SHORT.get(c, re.sub(r" vs .*$", "", c)) for c in df.columns}
        df = df.map(lambda v: str(v).replace(" ± ", "\n± ").replace(" [", "\n[")).rename(columns=short)
        right = {short[c] for c in right}
    keys = [c for c in df.columns if c in ("#", "Method", "Source", "Metric")]
    groups: list[list[str]] = [[]]
    for c in (c for c in df.columns if c not in keys):
        if groups[-1] and not fits(df, keys + groups[-1] + [c]):
            groups.append([])
        groups[-1].append(c)
    tables = []
    for group in groups:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for col in keys + group:
            table.add_column(Text(str(col)), justify="right" if col in right else "left", overflow="fold",
                             min_width=None if col in free else col_width(df, col))
        for row in df[keys + group].itertuples(index=False):
            table.add_row(*(Text(str(v)) for v in row))  # text, not rich markup: names are the user's
        tables.append(table)
    return tables


def print_report(report: Report, console: Any = None, sections: Sequence[str] = SECTIONS) -> None:
    """The report in the terminal: rich markdown for the text, rich tables for the tables."""

    console = console or make_console()
    for i, (kind, content) in enumerate(report_blocks(report, sections)):
        if i and kind in ("h2", "h3", "table"):
            console.print()
        if kind == "table":
            for j, table in enumerate(_rich_tables(content, console.width)):
                if j:
                    console.print()
                console.print(table)
        elif kind == "ul":
            console.print(Markdown("\n".join(f"- {item}" for item in content)))
        elif kind != "img":
            prefix = {"h1": "# ", "h2": "## ", "h3": "### "}.get(kind, "")
            console.print(Markdown(prefix + content))


def print_markdown(text: str, console: Any = None) -> None:
    """Render markdown text in the terminal with rich."""

    (console or make_console()).print(Markdown(text))


# ---------------------------------------------------------------------------------------------
# CSV


def to_csv(report: Report) -> str:
    """Machine-readable leaderboard: our rows (``source = ours``, numbers in percent, p-values as
    fractions), then the reference rows and ours - paper differences when a reference is given."""
    t = report.table.copy()
    t.insert(0, "source", "ours")
    ref = reference_comparison(report)
    if not ref.empty:
        ref = ref[ref["source"] != "ours"]
        t = pd.concat([t, ref], ignore_index=True)
    pooled = [f"{m.name}{s}" for m in metric_specs("csv", pooled=True) for s in ("", "_lo", "_hi")]
    tests = [c for c in ("p_auc", "p_auc_holm", "p_accuracy", "p_accuracy_holm", "control_auc_diff",
                         "control_p_auc", "control_p_auc_holm", "beats_control") if c in t.columns]
    cols = ["source", "method", "role", "folds_done", "folds_total",
            *(f"{m.name}_{s}" for m in metric_specs("csv", pooled=False) for s in ("mean", "std")),
            *pooled, *tests, "degenerate", "warning", "run"]
    buf = io.StringIO()
    t[cols].to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()
