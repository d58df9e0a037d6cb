"""The metrics of ssl_bench, one declaration each: what a metric is called and shown as, at which
level it is computed, how, with which interval, which way is better and in which tables it
appears. The fold (:mod:`.metrics`), the report (:mod:`ssl_bench.report`) and the command line
iterate :data:`METRIC_SPECS`; adding a metric is one entry here (and its computation in
:mod:`.metrics` when it is a new one).

Plain data, no scikit-learn: ``ssl-bench --help`` lists the sort keys from it.

Levels: ``fold`` (each held-out fold's own value, reported as mean and sample std over the folds,
TSBN's Table II) and, pooled over all held-out images of all folds, ``pooled`` (images),
``breast`` and ``patient`` (their images' scores aggregated, :func:`.clinical.aggregate_scores`).
Intervals of the pooled ones are the patient-clustered ones of :mod:`ssl_bench.report.pooled`:
Obuchowski's (1997) clustered AUC variance, or a patient bootstrap (Davison & Hinkley 1997).
"""

from __future__ import annotations

from dataclasses import dataclass

FOLD, POOLED, BREAST, PATIENT = "fold", "pooled", "breast", "patient"
LEVELS = (FOLD, POOLED, BREAST, PATIENT)

#: a fold metric's threshold: TSBN's fixed 0.5, or the fold's own operating point (chosen on its
#: training predictions, :mod:`.operating_point`)
PAPER, OPERATING = "paper", "operating"
PAPER_THRESHOLD = 0.5

#: how a metric's uncertainty is reported
FOLD_SPREAD = "fold_spread"  # mean ± sample std (ddof=1) over the folds
CLUSTERED_AUC = "clustered_auc"  # Obuchowski (1997), patients as clusters, logit interval
PATIENT_BOOTSTRAP = "patient_bootstrap"  # percentile interval over patient resamples
INTERVALS = (FOLD_SPREAD, CLUSTERED_AUC, PATIENT_BOOTSTRAP)

#: where a metric is shown: the report's tables (``leaderboard``: the first one, with intervals;
#: ``threshold``: at 0.5, mean ± std, also per fold and beside the paper's reference rows;
#: ``clinical`` and ``decisions``: pooled with intervals), the leaderboard's ``csv``, the summary
#: across ``seeds``, and the table ``ssl-bench run`` prints (``run``)
TABLES = ("leaderboard", "threshold", "clinical", "decisions", "csv", "seeds", "run")

HIGHER, LOWER = "higher", "lower"
PERCENT = "percent"  # a fraction in [0, 1], shown times 100


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    ``name``: its key in a fold's ``metrics.json`` (fold level) or the report's column (pooled
    levels; a fold metric's columns are ``<name>_mean`` and ``<name>_std``), and its
    ``--sort-by`` key. ``compute``: for a fold metric, the statistic of
    :func:`.metrics.threshold_statistics` at its ``threshold``; for a pooled one, the key of
    :func:`.metrics.pooled_metrics` (``summary.json`` ``pooled``)."""

    name: str
    title: str
    level: str
    compute: str
    interval: str
    tables: tuple[str, ...]
    threshold: str = PAPER
    direction: str = HIGHER
    unit: str = PERCENT

    def __post_init__(self) -> None:
        unknown = set(self.tables) - set(TABLES)
        if (
            self.level not in LEVELS
            or self.interval not in INTERVALS
            or unknown
            or self.direction not in (HIGHER, LOWER)
            or self.threshold not in (PAPER, OPERATING)
        ):
            raise ValueError(
                f"metric {self.name!r}: unknown level, interval, direction, threshold or table(s) {sorted(unknown)}"
            )

    @property
    def pooled(self) -> bool:
        return self.level != FOLD

    @property
    def column(self) -> str:
        """The report's column of its value: the mean over folds, or the pooled value."""
        return self.name if self.pooled else f"{self.name}_mean"

    def shown(self, value: float) -> float:
        """The value as the report shows it (a fraction in percent)."""
        return 100.0 * value if self.unit == PERCENT else value


#: TSBN's Table II metrics at 0.5
_TABLE_II = ("threshold", "csv", "seeds", "run")
#: every metric, in the order the tables show them: name, title, level, compute, interval, tables
#: (and a fold metric's threshold when it is not 0.5); higher is better and values are percent
METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "Accuracy", FOLD, "accuracy", FOLD_SPREAD, _TABLE_II),
    MetricSpec("sensitivity", "Sensitivity", FOLD, "sensitivity", FOLD_SPREAD, _TABLE_II),
    MetricSpec("specificity", "Specificity", FOLD, "specificity", FOLD_SPREAD, _TABLE_II),
    MetricSpec("youden", "Youden", FOLD, "youden", FOLD_SPREAD, _TABLE_II),
    MetricSpec("f1", "F1", FOLD, "f1", FOLD_SPREAD, _TABLE_II),
    MetricSpec("auc", "AUC", FOLD, "auc", FOLD_SPREAD, _TABLE_II),
    MetricSpec("op_accuracy", "Op. acc.", FOLD, "accuracy", FOLD_SPREAD, (), OPERATING),
    MetricSpec("op_sensitivity", "Op. sens.", FOLD, "sensitivity", FOLD_SPREAD, ("run",), OPERATING),
    MetricSpec("op_specificity", "Op. spec.", FOLD, "specificity", FOLD_SPREAD, ("run",), OPERATING),
    MetricSpec("oof_auc", "Pooled AUC", POOLED, "auc", CLUSTERED_AUC, ("leaderboard", "clinical", "csv", "seeds")),
    MetricSpec("auprc", "AUPRC", POOLED, "auprc", PATIENT_BOOTSTRAP, ("clinical", "csv", "seeds", "run")),
    MetricSpec(
        "sens_at_spec90", "Sens. @ 90% spec.", POOLED, "sens_at_spec90", PATIENT_BOOTSTRAP, ("clinical", "csv", "seeds")
    ),
    MetricSpec("sens_at_spec95", "Sens. @ 95% spec.", POOLED, "sens_at_spec95", PATIENT_BOOTSTRAP, ("clinical", "csv")),
    MetricSpec("breast_auc", "Breast AUC", BREAST, "breast_auc", CLUSTERED_AUC, ("clinical", "csv")),
    MetricSpec("patient_auc", "Patient AUC", PATIENT, "patient_auc", CLUSTERED_AUC, ("clinical", "csv")),
    MetricSpec(
        "op_sensitivity",
        "Op. sens.",
        POOLED,
        "op_sensitivity",
        PATIENT_BOOTSTRAP,
        ("leaderboard", "clinical", "csv", "seeds", "run"),
    ),
    MetricSpec(
        "op_specificity",
        "Op. spec.",
        POOLED,
        "op_specificity",
        PATIENT_BOOTSTRAP,
        ("leaderboard", "clinical", "csv", "seeds", "run"),
    ),
    MetricSpec(
        "breast_op_sensitivity", "Breast sens.", BREAST, "breast_op_sensitivity", PATIENT_BOOTSTRAP, ("decisions", "csv")
    ),
    MetricSpec(
        "breast_op_specificity", "Breast spec.", BREAST, "breast_op_specificity", PATIENT_BOOTSTRAP, ("decisions", "csv")
    ),
    MetricSpec(
        "patient_op_sensitivity", "Patient sens.", PATIENT, "patient_op_sensitivity", PATIENT_BOOTSTRAP, ("decisions", "csv")
    ),
    MetricSpec(
        "patient_op_specificity", "Patient spec.", PATIENT, "patient_op_specificity", PATIENT_BOOTSTRAP, ("decisions", "csv")
    ),
    MetricSpec("breast_pf1", "Breast pF1", BREAST, "breast_pf1", PATIENT_BOOTSTRAP, ("decisions", "csv")),
)


def metric_specs(
    table: str | None = None, pooled: bool | None = None, threshold: str | None = None
) -> tuple[MetricSpec, ...]:
    """The metrics of :data:`METRIC_SPECS` (read when called, so a test may replace it) shown in
    ``table``, pooled or per fold, at a fold ``threshold``; each filter applies when given."""
    return tuple(
        s
        for s in METRIC_SPECS
        if (table is None or table in s.tables)
        and (pooled is None or s.pooled == pooled)
        and (threshold is None or (not s.pooled and s.threshold == threshold))
    )


def sortable() -> tuple[MetricSpec, ...]:
    """What the leaderboard can be sorted by: the fold metrics of its tables (by their mean over
    folds) and every pooled metric, one per name."""
    return (*metric_specs("threshold", pooled=False), *metric_specs(pooled=True))


def sort_spec(key: str) -> MetricSpec | None:
    """The metric ``--sort-by key`` names, or None."""
    return next((spec for spec in sortable() if spec.name == key), None)


def sort_keys() -> tuple[str, ...]:
    """The names ``--sort-by`` accepts."""
    return tuple(s.name for s in sortable())


def in_sentence(title: str) -> str:
    """A title inside a sentence: its capital dropped unless it starts an acronym (``Pooled AUC``
    -> ``pooled AUC``, ``AUPRC`` stays)."""
    return title[0].lower() + title[1:] if title[1:2].islower() else title
