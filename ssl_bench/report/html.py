"""The leaderboard as one self-contained HTML page: inline CSS, the ROC figure embedded as a
base64 PNG, no scripts, fonts or links to fetch, so it opens in a browser with no network.
Tables come from :mod:`ssl_bench.report.render`, so they match the markdown and CSV outputs.
"""
from __future__ import annotations

import base64
from html import escape
from typing import Callable

import pandas as pd

from .. import __version__
from ..experiment.metric_specs import LOWER, MetricSpec, metric_specs
from .render import (
    AXIS_NOTES,
    CALIBRATION_NOTE,
    CLINICAL_NOTE,
    DECISION_NOTE,
    EXTERNAL_NOTE,
    axis_display,
    calibration_display,
    clinical_display,
    curves,
    external_display,
    decisions_display,
    P_NOTE,
    REFERENCE_NOTE,
    SALIENCY_KINDS,
    SALIENCY_NOTE,
    SUBGROUP_NOTE,
    THRESHOLD_NOTE,
    UNITS,
    describe_setup,
    eligible_for_best,
    leaderboard_display,
    numeric_columns,
    per_fold_display,
    provenance_display,
    reference_display,
    subgroup_displays,
    threshold_display,
    title as report_title,
    with_ci,
)
from .leaderboard import REFERENCE_LABEL, Report
from .axes import Axis
from .axis_plot import axis_figure
from .decision_curve import decision_curve_figure, has_breasts
from .reliability import has_calibrated, reliability_figure
from .figures import png_bytes
from .roc import report_figure

CSS = """
:root { --ink: #1d2433; --muted: #5b6475; --line: #d9dee7; --head: #f3f5f9; --accent: #2557a7;
        --good: #17703a; --bad: #a3261b; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
             "Liberation Sans", sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 28px 32px 40px; }
h1 { font-size: 24px; margin: 0 0 6px; }
h2 { font-size: 18px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; }
p { margin: 4px 0; }
.setup { font-size: 15px; }
.muted, .units, figcaption, footer { color: var(--muted); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); white-space: nowrap; }
.num { text-align: right; } .text { text-align: left; }
th { background: var(--head); font-weight: 600; border-bottom: 2px solid var(--line); vertical-align: bottom;
     white-space: normal; }
.board th { max-width: 120px; }
td.warn { text-align: left; color: var(--bad); white-space: normal; min-width: 170px; font-size: 13px; }
tbody tr:hover { background: #fafbfd; }
.board td.best { font-weight: 700; }
.board td.method { font-weight: 600; }
td.sig { font-weight: 700; color: var(--accent); }
tr.paper td { color: var(--muted); font-style: italic; }
tr.control td { color: var(--muted); font-style: italic; border-top: 2px solid var(--line); }
tr.diff td { border-bottom: 2px solid var(--line); }
td.pos { color: var(--good); } td.neg { color: var(--bad); }
td.summary { font-weight: 600; background: var(--head); }
ul.notes { margin: 10px 0 0; padding-left: 20px; max-width: 1100px; }
ul.notes li { margin: 3px 0; }
.pnote { font-weight: 600; }
.figure-row { display: flex; gap: 28px; align-items: flex-start; flex-wrap: wrap; }
figure { margin: 0; }
figure img { width: 560px; max-width: 100%; height: auto; border: 1px solid var(--line); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 22px 36px; }
.fold th, .fold td { padding: 4px 8px; font-size: 13px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0 0 14px; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.prov td { font-size: 12.5px; text-align: left; }
footer { margin-top: 36px; font-size: 12px; }
@media print { main { max-width: none; padding: 0; } h2 { break-after: avoid; } }
"""


def _base64(png: bytes | None, draw: Callable[[], bytes]) -> str:
    """A figure's PNG for an ``<img src="data:...">``: ``png`` when the caller rendered it already, else ``draw()``."""
    return base64.b64encode(png if png is not None else draw()).decode("ascii")


def _table(df: pd.DataFrame, css: str = "", cell_classes=None, row_classes=None) -> str:
    """An escaped HTML table, numbers right-aligned; ``cell_classes(i, col, value) -> list`` and
    ``row_classes(i) -> str`` add CSS classes."""
    right = set(numeric_columns(df))
    head = "".join(f'<th class="{"num" if c in right else "text"}">'
                   f'{escape(str(c)).replace("95% CI", "95%&nbsp;CI")}</th>' for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = []
        for col, value in zip(df.columns, row):
            classes = ["num" if col in right else "text"]
            classes += cell_classes(i, col, str(value)) if cell_classes else []
            cells.append(f'<td class="{" ".join(classes)}">{escape(str(value))}</td>')
        rc = row_classes(i) if row_classes else ""
        attr = f' class="{rc}"' if rc else ""
        rows.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _best_marker(report: Report, numbers: dict[str, tuple[MetricSpec, pd.Series]]):
    """``best(i, col)``: whether row ``i`` holds the best value of column ``col`` of ``numbers``
    (its metric and values; the highest, or the lowest where lower is better), among the rows
    eligible for it (:func:`~ssl_bench.report.render.eligible_for_best`: no control, no
    degenerate fold), when at least two of them differ."""
    eligible = eligible_for_best(report).to_numpy()

    def best(i: int, col: str) -> bool:
        spec, column = numbers[col]
        values = column[eligible]
        top = values.min() if spec.direction == LOWER else values.max()
        return bool(eligible[i] and values.nunique() > 1 and column.iloc[i] == top)

    return best


def _leaderboard(report: Report) -> str:
    board = leaderboard_display(report)
    t = report.table
    numbers = {with_ci(spec): (spec, t[spec.name]) for spec in metric_specs("leaderboard", pooled=True)}
    best = _best_marker(report, numbers)
    p_cols = {c: "p_auc" for c in board.columns if c.startswith("p ")}

    def classes(i, col, value):
        out = {"Method": ["method"], "Warning": ["warn"]}.get(col, [])
        if col in numbers and best(i, col):
            out.append("best")
        if col in p_cols and value != "baseline" and t[f"{p_cols[col]}_holm"].iloc[i] < 0.05:  # NaN: False
            out.append("sig")
        return out

    def rows(i):
        return "control" if t["role"].iloc[i] == "control" else ""

    return _table(board, "board", classes, rows)


def _threshold(report: Report) -> str:
    table = threshold_display(report)
    t = report.table
    numbers = {spec.title: (spec, t[spec.column]) for spec in metric_specs("threshold", pooled=False)}
    best = _best_marker(report, numbers)
    p_cols = [c for c in table.columns if c.startswith("p ")]

    def classes(i, col, value):
        out = ["method"] if col == "Method" else []
        if col in numbers and best(i, col):
            out.append("best")
        if col in p_cols and value != "baseline" and t["p_accuracy_holm"].iloc[i] < 0.05:  # NaN: False
            out.append("sig")
        return out

    def rows(i):
        return "control" if t["role"].iloc[i] == "control" else ""

    return (f"<h2>At the paper's threshold 0.5</h2><p class=\"muted\">{escape(THRESHOLD_NOTE)}</p>"
            + _table(table, "board", classes, rows))


def _clinical(report: Report, decision_png: bytes | None = None) -> str:
    return (f"<h2>Pooled metrics clinicians read</h2><p class=\"muted\">"
            f"{escape(CLINICAL_NOTE.format(aggregate=report.aggregate))}</p>"
            + _table(clinical_display(report), "clinical")
            + f"<h2>Decisions per breast and per patient</h2><p class=\"muted\">"
            f"{escape(DECISION_NOTE.format(aggregate=report.aggregate))}</p>"
            + _table(decisions_display(report), "clinical") + _decision_curve(report, decision_png))


def _decision_curve(report: Report, png: bytes | None) -> str:
    if not has_breasts(report):
        return ""
    img = _base64(png, lambda: png_bytes(decision_curve_figure(report)))
    return ("<div class=\"figure-row\"><figure><img alt=\"Net benefit per breast against the threshold "
            f"probability, one line per method\" src=\"data:image/png;base64,{img}\"></figure></div>")


def _reference(report: Report) -> str:
    ref = reference_display(report)
    if ref.empty:
        return ""
    sources = ref["Source"].tolist()

    def rows(i):
        return {"ours - paper": "diff"}.get(sources[i], "paper" if sources[i].startswith("paper") else "")

    def cells(i, col, value):
        if sources[i] != "ours - paper" or col in ("Method", "Source") or value == "–":
            return []
        return ["pos"] if float(value) > 0 else ["neg"] if float(value) < 0 else []

    return (f"<h2>Reference: {escape(REFERENCE_LABEL)}</h2><p class=\"muted\">{escape(REFERENCE_NOTE)}</p>"
            + _table(ref, "ref", cells, rows))


def _folds(report: Report) -> str:
    cards = []
    for run in report.runs:
        df = per_fold_display(report, run.method)
        table = _table(df, "fold", lambda i, col, v: ["summary"] if col == "Mean ± std" else [])
        cards.append(f'<div class="card"><h3>{escape(run.method)}</h3>{table}</div>')
    return f'<h2>Per-fold results</h2><div class="grid">{"".join(cards)}</div>'


def _provenance(report: Report) -> str:
    facts, table = provenance_display(report)
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return f'<h2>Provenance</h2><dl class="facts">{dl}</dl>' + _table(table, "prov")


def _notes(report: Report) -> str:
    if not report.notes:
        return ""
    items = []
    for n in report.notes:
        text = escape(n)
        if P_NOTE in n:
            text = text.replace(P_NOTE, f'<span class="pnote">{P_NOTE}</span>')
        items.append(f"<li>{text}</li>")
    return f'<ul class="notes">{"".join(items)}</ul>'


def _axis(report: Report, axis: Axis, png: bytes | None) -> str:
    """A study axis' section (figure embedded, then its table); the caller checks the runs hold its curve."""
    img = _base64(png, lambda: png_bytes(axis_figure(report, axis)))
    return (f"<h2>{escape(axis.title)}</h2><div class=\"figure-row\"><figure>"
            f"<img alt=\"Pooled out-of-fold AUC against the {escape(axis.column.replace('_', ' '))}, one line "
            f"per method\" src=\"data:image/png;base64,{img}\"><figcaption>{escape(AXIS_NOTES[axis.name])}"
            "</figcaption></figure></div>" + _table(axis_display(report, axis), "efficiency"))


def _external(report: Report) -> str:
    """The external-validation section, when the report has one."""
    if report.external is None:
        return ""
    return (f"<h2>External validation</h2><p class=\"muted\">{escape(EXTERNAL_NOTE)}</p>"
            + _table(external_display(report), "clinical"))


def _subgroups(report: Report) -> str:
    """The subgroup section: a table per variable, when the runs recorded subgroups."""
    tables = subgroup_displays(report)
    if not tables:
        return ""
    return (f"<h2>Subgroups</h2><p class=\"muted\">{escape(SUBGROUP_NOTE)}</p>"
            + "".join(f"<h3>{escape(heading)}</h3>" + _table(table, "clinical") for heading, table in tables))


def _saliency(report: Report) -> str:
    """The saliency section: per method, its overlays by kind (embedded from the run's files)."""
    cards = []
    for run in report.runs:
        if run.saliency is None or run.saliency.empty:
            continue
        rows = []
        for kind, title in SALIENCY_KINDS.items():
            own = run.saliency[run.saliency["kind"] == kind]
            figures = "".join(
                f"<figure><img alt=\"{escape(title)} {escape(str(r.image_id))}: Grad-CAM overlay\" "
                f"src=\"data:image/png;base64,{base64.b64encode((run.path / r.file).read_bytes()).decode()}\">"
                f"<figcaption>{escape(str(r.image_id))}, p={r.score:.2f}</figcaption></figure>"
                for r in own.itertuples(index=False))
            rows.append(f"<h4>{escape(title)}s</h4><div class=\"figure-row\">{figures or '<p class=muted>none</p>'}</div>")
        cards.append(f'<div class="card"><h3>{escape(run.method)}</h3>{"".join(rows)}</div>')
    if not cards:
        return ""
    return f"<h2>Saliency</h2><p class=\"muted\">{escape(SALIENCY_NOTE)}</p>" + "".join(cards)


def _calibration(report: Report, png: bytes | None) -> str:
    """The calibration section (its table, then the reliability diagrams embedded), when the runs
    recorded calibrated probabilities."""
    if not has_calibrated(report):
        return ""
    img = _base64(png, lambda: png_bytes(reliability_figure(report)))
    return (f"<h2>Calibration</h2><p class=\"muted\">{escape(CALIBRATION_NOTE)}</p>"
            + _table(calibration_display(report), "clinical")
            + "<div class=\"figure-row\"><figure><img alt=\"Reliability diagrams of the raw and the calibrated "
            f"probabilities, one line per method\" src=\"data:image/png;base64,{img}\"></figure></div>")


def to_html(report: Report, png: bytes | None = None, figures: dict[str, bytes] | None = None) -> str:
    """The whole report as one HTML document (a string); ``png``: the ROC figure, if rendered
    already (else it is drawn here); ``figures``: likewise the sections' figures by name
    (``reliability``, ``decision_curve``, the study axes' ``label_efficiency`` and ``resolution``)."""
    figures = figures or {}
    img = _base64(png, lambda: png_bytes(report_figure(report)))
    caption = ("One ROC curve per method over all held-out images of all folds (pooled out-of-fold "
               "scores), as Fig. 4 of the TSBN paper; the legend gives each pooled AUC.")
    title = f"ssl-bench {report_title(report)[0].lower()}{report_title(report)[1:]}"
    body = [
        f"<header><h1>{escape(title)}</h1><p class=\"setup\">{escape(describe_setup(report))}.</p>"
        f"<p class=\"units\">{escape(UNITS)}</p></header>",
        "<h2>Leaderboard</h2>", _leaderboard(report), _notes(report), _external(report), _threshold(report),
        _clinical(report, figures.get("decision_curve")),
        "<h2>ROC curves</h2><div class=\"figure-row\"><figure>"
        f"<img alt=\"Pooled out-of-fold ROC curves, one per method\" src=\"data:image/png;base64,{img}\">"
        f"<figcaption>{escape(caption)}</figcaption></figure></div>",
        _calibration(report, figures.get("reliability")), _subgroups(report), _saliency(report),
        *(_axis(report, axis, figures.get(axis.name)) for axis in curves(report)), _reference(report),
        _folds(report),
        _provenance(report),
        f"<footer>Written by ssl-bench {escape(__version__)} (<code>ssl-bench report</code>). "
        f"p-values are {P_NOTE}.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(b for b in body if b) + "\n</main></body></html>\n")
