"""Reading monitoring numbers: every page, chart, alert and API answer asks here, and this reads rollups only.

Metric keys (METRICS) are what alert rules, `/api/v1/deployments/<slug>/metrics/?metric=` and the charts name.
Shares are fractions (0.05 = 5 %), latencies milliseconds, PSI unitless.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MetricInfo:
    label: str
    unit: str  # "", "%", "ms", "requests", "PSI"
    group: str  # usage | latency | errors | quality | drift | performance
    higher_is_better: bool
    description: str


METRICS: dict[str, MetricInfo] = {
    "requests": MetricInfo("Requests", "requests", "usage", True, "Requests answered (shadow scoring excluded)."),
    "rows": MetricInfo("Rows scored", "rows", "usage", True, "Rows scored across all requests."),
    "traffic_change": MetricInfo(
        "Traffic change", "%", "usage", True,
        "Requests in the window compared with the same window one week earlier (-0.4 = 40 % fewer)."),
    "error_rate": MetricInfo("Error rate", "%", "errors", False, "Share of requests answered with an error."),
    "latency_p50": MetricInfo("Latency p50", "ms", "latency", False, "Median time to answer."),
    "latency_p95": MetricInfo("Latency p95", "ms", "latency", False, "95 % of requests answered faster than this."),
    "latency_p99": MetricInfo("Latency p99", "ms", "latency", False, "99 % of requests answered faster than this."),
    "missing_share": MetricInfo("Missing values", "%", "quality", False,
                                "Share of missing values (the worst feature, or the one named)."),
    "out_of_range_share": MetricInfo("Out of range", "%", "quality", False,
        "Share of values outside the reference range (the worst feature, or the one named)."),
    "drift_psi": MetricInfo("Feature drift (PSI)", "PSI", "drift", False,
                            "Population stability index against the reference (the worst feature, or the one named)."),
    "prediction_psi": MetricInfo("Prediction drift (PSI)", "PSI", "drift", False,
                                 "How far the distribution of predictions moved from the reference."),
    "accuracy": MetricInfo("Accuracy", "%", "performance", True, "Share of labelled predictions that were right."),
    "precision": MetricInfo("Precision", "%", "performance", True, "Of the predicted positives, the share that were."),
    "recall": MetricInfo("Recall", "%", "performance", True, "Of the actual positives, the share found."),
    "f1": MetricInfo("F1", "%", "performance", True, "Balance of precision and recall."),
    "roc_auc": MetricInfo("ROC AUC", "", "performance", True,
                          "Ranking quality of the scores (only when the model returns probabilities)."),
    "mae": MetricInfo("MAE", "", "performance", False, "Mean absolute error."),
    "rmse": MetricInfo("RMSE", "", "performance", False, "Root mean squared error."),
    "r2": MetricInfo("R²", "", "performance", True, "Share of the variance explained."),
}


@dataclass
class Measurement:
    """One metric over one window: the value (None when there is too little data) and how much data it rests on."""

    value: float | None
    samples: int
    details: dict = field(default_factory=dict)  # e.g. {"feature": "income", "features": [{"name", "psi", ...}]}


@dataclass
class Series:
    metric: str
    bucket: str  # "5m" | "1h" | "1d"
    points: list[tuple[dt.datetime, float | None, int]]  # (bucket start, value, samples)
