"""Reading monitoring numbers: every page, chart, alert and API answer asks here, and this reads rollups only.

Metric keys (METRICS) are what alert rules, `/api/v1/deployments/<slug>/metrics/?metric=` and the charts name.
Shares are fractions (0.05 = 5 %), latencies milliseconds, PSI unitless.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from dataclasses import dataclass, field

import numpy as np


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


# --- Reading rollups ---------------------------------------------------------------------------------------------

PERFORMANCE_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2")
FEATURE_METRICS = {"missing_share", "out_of_range_share", "drift_psi"}
MIN_LABELLED = 20  # fewer labelled rows in a bucket or window: no performance figure (one wrong answer is not 0 %)
_USAGE_FIELDS = ("start", "model_version_id", "shadow", "reference_id", "requests", "rows", "errors", "callers",
                 "latency_sum", "latency_hist")
_DRIFT_FIELDS = (*_USAGE_FIELDS, "features", "predictions")


def choose_bucket(start: dt.datetime, end: dt.datetime) -> str:
    span = end - start
    if span <= dt.timedelta(hours=6):
        return "5m"
    if span <= dt.timedelta(days=7):
        return "1h"
    return "1d"


def _fields_for(metric: str) -> tuple[str, ...]:
    info = METRICS.get(metric)
    if info is None:
        raise ValueError(f"Unknown metric {metric!r}.")
    if info.group in ("quality", "drift"):
        return _DRIFT_FIELDS
    if info.group == "performance":
        return (*_USAGE_FIELDS, "performance")
    return _USAGE_FIELDS


_ALL_FIELDS = (*_DRIFT_FIELDS, "performance")
_reading: contextvars.ContextVar[dict | None] = contextvars.ContextVar("monitoring_reading", default=None)


@contextlib.contextmanager
def reading():
    """Within this block, the same rollups are read from the database (and merged) once, however many charts and
    numbers ask for them: a page wraps its work in it."""
    token = _reading.set({})
    try:
        yield
    finally:
        _reading.reset(token)


def _rollups(deployment, bucket: str, start: dt.datetime, end: dt.datetime, fields=_DRIFT_FIELDS):
    from apps.monitoring.models import Rollup
    from apps.monitoring.rollups import floor

    memo = _reading.get()
    key = ("rows", getattr(deployment, "pk", deployment), bucket, floor(start, bucket), end)
    if memo is not None:
        if key not in memo:
            memo[key] = list(Rollup.objects.filter(deployment=deployment, bucket=bucket, shadow=False,
                                                   start__gte=key[3], start__lt=end)
                             .only(*_ALL_FIELDS).order_by("start"))
        return memo[key]
    return list(Rollup.objects.filter(deployment=deployment, bucket=bucket, shadow=False,
                                      start__gte=floor(start, bucket), start__lt=end)
                .only(*fields).order_by("start"))


def _pieces(start: dt.datetime, end: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """[start, end) as the fewest rollup buckets, exact to 5 minutes: whole days as days, whole hours as hours,
    the edges as 5-minute buckets (a day is then at most ~46 rows to read, not 288)."""
    from apps.monitoring.rollups import BUCKETS, floor

    def ceil(moment, bucket):
        low = floor(moment, bucket)
        return low if low == moment else low + BUCKETS[bucket]

    start = floor(start, "5m")
    pieces = []
    for bucket, finer in (("1d", "1h"), ("1h", "5m")):
        inner_start, inner_end = ceil(start, bucket), floor(end, bucket)
        if inner_end - inner_start >= BUCKETS[bucket]:
            # The edges are split further (hours within the day edges, 5 minutes within the hour edges).
            return [*_pieces_of(finer, start, inner_start), (bucket, inner_start, inner_end),
                    *_pieces_of(finer, inner_end, end)]
    return [("5m", start, end)] if end > start else pieces


def _pieces_of(bucket: str, start: dt.datetime, end: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
    if end <= start:
        return []
    if bucket == "5m":
        return [("5m", start, end)]
    return _pieces(start, end)


def _window(deployment, start: dt.datetime, end: dt.datetime, fields=_DRIFT_FIELDS) -> dict | None:
    """The window's rollups merged into one, read as the fewest buckets that cover it exactly (to 5 minutes);
    memoised inside reading()."""
    memo = _reading.get()
    key = ("merged", getattr(deployment, "pk", deployment), start, end)
    if memo is not None and key in memo:
        return memo[key]
    rows = [row for piece, a, b in _pieces(start, end) for row in _rollups(deployment, piece, a, b, fields)]
    merged = _merged(rows)
    if memo is not None:
        memo[key] = merged
    return merged


def requests_between(deployment, *, start: dt.datetime, end: dt.datetime) -> int:
    """Requests answered in [start, end) (exact to 5 minutes), without reading any JSON: one query per piece."""
    from django.db.models import Sum

    from apps.monitoring.models import Rollup

    total = 0
    for bucket, a, b in _pieces(start, end):
        total += Rollup.objects.filter(deployment=deployment, bucket=bucket, shadow=False, start__gte=a,
                                       start__lt=b).aggregate(n=Sum("requests"))["n"] or 0
    return total


def _profile(reference_id: int | None):
    """A ready reference profile by id (read once per reading() block)."""
    if reference_id is None:
        return None
    from apps.monitoring.models import ReferenceProfile

    memo = _reading.get()
    key = ("profile", reference_id)
    if memo is not None and key in memo:
        return memo[key]
    found = ReferenceProfile.objects.filter(pk=reference_id, status=ReferenceProfile.Status.READY).first()
    if memo is not None:
        memo[key] = found
    return found


def _merged(rows) -> dict | None:
    from apps.monitoring.rollups import merge

    return merge(rows) if rows else None


def _feature_values(metric: str, merged: dict, feature: str | None) -> list[tuple[str, float | None, int, dict]]:
    """(feature, value, samples, extra) for one feature metric, every feature or the one named."""
    from apps.monitoring import drift

    profile = _profile(merged.get("reference_id")) if metric == "drift_psi" else None
    out = []
    for name, stats in (merged.get("features") or {}).items():
        if feature and name != feature:
            continue
        n = stats.get("n", 0)
        if metric == "missing_share":
            out.append((name, stats.get("missing", 0) / n if n else None, n, {}))
        elif metric == "out_of_range_share":
            present = n - stats.get("missing", 0)
            out.append((name, stats.get("out_of_range", 0) / present if present else None, present, {}))
        elif profile is not None and name in profile.features and stats.get("counts"):
            compared = drift.compare(profile.features[name], stats["counts"])
            out.append((name, compared["psi"], compared["samples"], compared))
    return out


def value_of(metric: str, merged: dict | None, *, feature: str | None = None) -> Measurement:
    """One metric computed from merged rollup fields (rollups.merge)."""
    from apps.monitoring import drift, performance
    from apps.monitoring.rollups import percentile

    if merged is None:
        return Measurement(None, 0)
    requests = merged["requests"]
    if metric == "requests":
        return Measurement(float(requests), requests)
    if metric == "rows":
        return Measurement(float(merged["rows"]), requests)
    if metric == "error_rate":
        return Measurement(merged["errors"] / requests if requests else None, requests)
    if metric.startswith("latency_p"):
        return Measurement(percentile(merged["latency_hist"], float(metric.removeprefix("latency_p"))), requests)
    if metric in FEATURE_METRICS:
        values = [v for v in _feature_values(metric, merged, feature) if v[1] is not None]
        if metric == "drift_psi":
            values = [v for v in values if v[3].get("verdict") != "too_few"]
        if not values:
            return Measurement(None, 0)
        worst = max(values, key=lambda v: v[1])
        details = {"feature": worst[0]}
        if metric == "drift_psi":
            details["features"] = [{"name": name, "psi": value, "verdict": extra["verdict"]}
                                   for name, value, _, extra in sorted(values, key=lambda v: -v[1])]
        return Measurement(worst[1], worst[2], details)
    if metric == "prediction_psi":
        profile = _profile(merged.get("reference_id"))
        counts = (merged.get("predictions") or {}).get("counts")
        if profile is None or not profile.predictions or not counts:
            return Measurement(None, 0)
        compared = drift.compare(profile.predictions, counts)
        if compared["verdict"] == "too_few":
            return Measurement(None, compared["samples"])
        return Measurement(compared["psi"], compared["samples"], {"verdict": compared["verdict"]})
    if metric in PERFORMANCE_KEYS:
        stats = merged.get("performance") or {}
        n = stats.get("n", 0)
        value = performance.metrics(stats).get(metric) if n >= MIN_LABELLED else None
        return Measurement(value, n)
    raise ValueError(f"Unknown metric {metric!r}.")


def window_value(deployment, metric: str, *, minutes: int, feature: str | None = None,
                 now: dt.datetime | None = None) -> Measurement:
    """A metric over the trailing `minutes` (what alert rules evaluate)."""
    from django.utils import timezone

    now = now or timezone.now()
    start = now - dt.timedelta(minutes=minutes)
    if metric == "traffic_change":
        current = requests_between(deployment, start=start, end=now)
        week = dt.timedelta(days=7)
        before = requests_between(deployment, start=start - week, end=now - week)
        if not before:
            return Measurement(None, 0)
        return Measurement(current / before - 1, before, {"current": current, "before": before})
    return value_of(metric, _window(deployment, start, now, _fields_for(metric)), feature=feature)


def series(deployment, metric: str, *, start: dt.datetime, end: dt.datetime, bucket: str | None = None,
           feature: str | None = None) -> Series:
    """A metric per bucket over [start, end); buckets without data are left out (None for a value without data)."""
    return series_many(deployment, [metric], start=start, end=end, bucket=bucket, feature=feature)[metric]


def series_many(deployment, names: list[str], *, start: dt.datetime, end: dt.datetime, bucket: str | None = None,
                feature: str | None = None) -> dict[str, Series]:
    """Several metrics per bucket in one pass: each bucket's rollups are read and merged once, not once per metric."""
    from itertools import groupby

    bucket = bucket or choose_bucket(start, end)
    read = ["requests" if name == "traffic_change" else name for name in names]
    fields = tuple(dict.fromkeys(f for name in read for f in _fields_for(name)))
    points: dict[str, list] = {name: [] for name in names}
    for moment, group in groupby(_rollups(deployment, bucket, start, end, fields), key=lambda r: r.start):
        merged = _merged(list(group))
        for name, metric in zip(names, read, strict=True):
            measured = value_of(metric, merged, feature=feature)
            points[name].append((moment, measured.value, measured.samples))
    return {name: Series(name, bucket, found) for name, found in points.items()}


def summary(deployment, *, start: dt.datetime, end: dt.datetime) -> dict:
    """The headline numbers of a window (one query)."""
    merged = _window(deployment, start, end, _ALL_FIELDS)
    result = {"requests": 0, "rows": 0, "errors": 0, "error_rate": None, "callers": 0, "labelled": 0}
    if merged is None:
        return result
    result.update(requests=merged["requests"], rows=merged["rows"], errors=merged["errors"],
                  callers=len(merged["callers"]), labelled=(merged.get("performance") or {}).get("n", 0))
    for metric in ("error_rate", "latency_p50", "latency_p95", "latency_p99", "missing_share", "out_of_range_share",
                   "drift_psi", "prediction_psi", *PERFORMANCE_KEYS):
        measured = value_of(metric, merged)
        if measured.value is not None or metric not in PERFORMANCE_KEYS:
            result[metric] = measured.value
        if measured.details.get("feature"):
            result[f"{metric}_feature"] = measured.details["feature"]
    return result


def drift_report(deployment, *, start: dt.datetime, end: dt.datetime) -> dict:
    """Every feature's drift over the window, worst first, with the reference and current shares per bin."""
    from apps.monitoring import drift, reference

    merged = _window(deployment, start, end, _DRIFT_FIELDS)
    profile = _profile(merged.get("reference_id")) if merged else None
    report = {"reference": None, "reason": "", "features": [], "predictions": None}
    if profile is None:
        champion = deployment.champion
        dataset = reference.dataset_for(deployment, champion)
        if dataset is None:
            report["reason"] = ("Drift needs reference data: link the model version's training dataset, or choose "
                                "a reference dataset for this deployment.")
        elif merged is None:
            report["reason"] = "No predictions in this period yet."
        else:
            report["reason"] = "The reference statistics are being computed; drift appears within minutes."
        return report
    report["reference"] = {"name": str(profile.dataset_version), "rows": profile.rows}
    for name, stats in merged["features"].items():
        ref = profile.features.get(name)
        if ref is None or not stats.get("counts"):
            continue
        compared = drift.compare(ref, stats["counts"])
        report["features"].append({"name": name, **compared, "labels": drift.bin_labels(ref),
                                   "reference_shares": drift.shares(ref["counts"]),
                                   "current_shares": drift.shares(stats["counts"])})
    report["features"].sort(key=lambda f: -(f["psi"] or 0))
    counts = (merged.get("predictions") or {}).get("counts")
    if profile.predictions and counts:
        compared = drift.compare(profile.predictions, counts)
        report["predictions"] = {"name": "prediction", **compared, "labels": drift.bin_labels(profile.predictions),
                                 "reference_shares": drift.shares(profile.predictions["counts"]),
                                 "current_shares": drift.shares(counts)}
    return report


def drift_heatmap(deployment, *, start: dt.datetime, end: dt.datetime, bucket: str | None = None) -> dict:
    """PSI per feature (rows) and bucket (columns); None where a bucket has too few rows to say.

    PSI only (no test per cell): a heat-map of a month of hours is thousands of cells. Without a `bucket`, the
    range's usual one is tried first and a coarser one when most cells would be too small to say anything."""
    if bucket is None:
        order = ["5m", "1h", "1d"]
        for candidate in order[order.index(choose_bucket(start, end)):]:
            heat = _heatmap(deployment, start=start, end=end, bucket=candidate)
            cells = [v for row in heat["psi"] for v in row]
            if candidate == "1d" or sum(v is None for v in cells) <= len(cells) / 2:
                return heat
    return _heatmap(deployment, start=start, end=end, bucket=bucket)


def _heatmap(deployment, *, start: dt.datetime, end: dt.datetime, bucket: str) -> dict:
    from itertools import groupby

    from apps.monitoring import drift

    times, merged_rows = [], []
    for moment, group in groupby(_rollups(deployment, bucket, start, end, _DRIFT_FIELDS), key=lambda r: r.start):
        times.append(moment)
        merged_rows.append(_merged(list(group)))
    profile = next((_profile(m.get("reference_id")) for m in reversed(merged_rows) if m.get("reference_id")), None)
    if profile is None:
        return {"times": times, "features": [], "psi": [], "bucket": bucket}
    features, matrix = [], []
    for name in sorted(profile.features):
        ref = profile.features[name]
        width = len(ref["counts"])
        counts = np.zeros((len(merged_rows), width))
        for i, merged in enumerate(merged_rows):
            found = (merged.get("features") or {}).get(name, {}).get("counts")
            if merged.get("reference_id") == profile.pk and found and len(found) == width:
                counts[i] = found
        if not counts.any():
            continue
        features.append(name)
        matrix.append([None if total < drift.MIN_SAMPLES else value
                       for value, total in zip(drift.psi_rows(ref, counts), counts.sum(axis=1), strict=True)])
    return {"times": times, "features": features, "psi": matrix, "bucket": bucket}


def _daily(deployments, days: int, now):
    from django.utils import timezone

    from apps.monitoring.models import Rollup
    from apps.monitoring.rollups import floor

    now = now or timezone.now()
    first = floor(now, "1d") - dt.timedelta(days=days - 1)
    ids = [getattr(d, "pk", d) for d in deployments]
    rows = (Rollup.objects.filter(deployment_id__in=ids, bucket="1d", shadow=False, start__gte=first)
            .values_list("deployment_id", "start", "requests", "callers"))
    dates = [(first + dt.timedelta(days=i)).date() for i in range(days)]
    return ids, dates, rows


def daily_requests(deployments, *, days: int = 14, now: dt.datetime | None = None) -> dict[int, list]:
    """Requests per UTC day for each deployment (every day present, zeros included), one query for all."""
    ids, dates, rows = _daily(deployments, days, now)
    totals: dict[tuple[int, dt.date], int] = {}
    for deployment_id, start, requests, _ in rows:
        key = (deployment_id, start.date())
        totals[key] = totals.get(key, 0) + requests
    return {i: [(d, totals.get((i, d), 0)) for d in dates] for i in ids}


def daily_callers(deployments, *, days: int = 14, now: dt.datetime | None = None) -> dict[int, list]:
    """Distinct callers per UTC day for each deployment."""
    ids, dates, rows = _daily(deployments, days, now)
    callers: dict[tuple[int, dt.date], set] = {}
    for deployment_id, start, _, names in rows:
        callers.setdefault((deployment_id, start.date()), set()).update(names or [])
    return {i: [(d, len(callers.get((i, d), ()))) for d in dates] for i in ids}


def markers(deployment, *, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """Things that happened to the deployment in the window, for vertical lines on every chart."""
    from apps.approvals.models import ApprovalRequest
    from apps.core.models import bulky_fields
    from apps.deployments.models import DeploymentEvent
    from apps.registry.models import ModelVersion

    found = []
    for event in (DeploymentEvent.objects.filter(deployment=deployment, created_at__gte=start, created_at__lt=end)
                  .select_related("champion__model").defer(*bulky_fields(ModelVersion, "champion"))
                  .order_by("created_at")[:200]):
        found.append({"time": event.created_at, "kind": event.kind,
                      "label": f"{event.get_kind_display()}: {event.champion.model.name} v{event.champion.number}"})
    versions = [v for v in (deployment.champion_id, deployment.fallback_id, deployment.challenger_id) if v]
    for request in (ApprovalRequest.objects.filter(model_version_id__in=versions, environment=deployment.environment,
                                                   decided_at__gte=start, decided_at__lt=end)
                    .select_related("model_version__model").defer(*bulky_fields(ModelVersion, "model_version"))
                    .order_by("decided_at")[:100]):
        found.append({"time": request.decided_at, "kind": "approval",
                      "label": f"{request.get_status_display()}: {request.model_version.model.name} "
                               f"v{request.model_version.number}"})
    return sorted(found, key=lambda m: m["time"])
