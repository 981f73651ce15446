"""Rolling the prediction log up into 5-minute, hourly and daily counts (beat: `run()` every minute).

A run reads the PredictionLog ids above its cursor (and the ground truth ids above its other cursor) only to learn
which 5-minute buckets changed, then recounts each of those buckets from its raw rows and re-sums the hour and
the day that contain it. A bucket's rollup is therefore a function of its rows alone: running twice, or after a
crash, or on rows that arrived late, gives the same rows. The cursor moves in the same transaction as the
rollups it covers.

Every count is additive (latency is a histogram, not percentiles), so hours are sums of their 5-minute rows,
days of their hours, and any window the pages ask for is a sum of a few rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.deployments.models import Deployment, PredictionLog
from apps.monitoring import drift, performance, reference
from apps.monitoring.models import GroundTruth, ReferenceProfile, Rollup, RollupCursor

BUCKETS = {"5m": dt.timedelta(minutes=5), "1h": dt.timedelta(hours=1), "1d": dt.timedelta(days=1)}
# Latency bins (ms): 0.05 ms to 2 min, log-spaced, ~9.3 % wide; p50/p95/p99 are read within one bin.
LATENCY_EDGES = np.geomspace(0.05, 120_000, 161)
MAX_CALLERS = 100  # distinct callers kept per rollup (a count above it is a lower bound)
# Rows read per recount query: a 5-minute bucket of a busy deployment is read in pieces of this size.
CHUNK_ROWS = 20_000
# Buckets holding rows this recent are recounted on every run, whatever the cursor says: a row whose id was taken
# before the cursor moved but committed after it (two drains at once, seconds apart) is still counted.
RECENT = dt.timedelta(minutes=2)
BATCH_IDS = 500_000  # log ids per transaction when catching up


def floor(moment: dt.datetime, bucket: str) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    if bucket == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "1h":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def run(now: dt.datetime | None = None) -> int:
    """Bring the rollups up to date with the prediction log and the ground truth; returns 5-minute buckets recounted.

    A backlog (after an outage, or the first run on a big log) is worked through BATCH_IDS log rows per
    transaction, the cursor moving after each, so no run holds one long transaction or the cursor lock for long."""
    now = now or timezone.now()
    recounted, first = 0, True
    while True:
        done, count = _run_batch(now, with_extras=first)
        recounted += count
        first = False
        if done:
            return recounted


def _run_batch(now: dt.datetime, *, with_extras: bool) -> tuple[bool, int]:
    with transaction.atomic():
        cursor, _ = RollupCursor.objects.select_for_update().get_or_create(name="predictions")
        newest = PredictionLog.objects.aggregate(top=Max("id"))["top"] or 0
        top = min(newest, cursor.last_id + BATCH_IDS)
        touched: set[tuple[int, dt.datetime]] = set()
        if top > cursor.last_id:
            for deployment_id, created in (PredictionLog.objects.filter(id__gt=cursor.last_id, id__lte=top)
                                           .values_list("deployment_id", "created_at").iterator(chunk_size=50_000)):
                touched.add((deployment_id, floor(created, "5m")))
        feedback_top = cursor.last_feedback_id
        if with_extras:
            feedback_top = GroundTruth.objects.aggregate(top=Max("id"))["top"] or 0
            if feedback_top > cursor.last_feedback_id:
                for deployment_id, predicted in (GroundTruth.objects
                                                 .filter(id__gt=cursor.last_feedback_id, id__lte=feedback_top,
                                                         predicted_at__isnull=False)
                                                 .values_list("deployment_id", "predicted_at")):
                    touched.add((deployment_id, floor(predicted, "5m")))
            from apps.monitoring.services import match_pending

            touched |= match_pending(now)
            recent = now - RECENT
            for deployment_id, created in (PredictionLog.objects.filter(created_at__gte=recent)
                                           .values_list("deployment_id", "created_at")
                                           .iterator(chunk_size=50_000)):
                touched.add((deployment_id, floor(created, "5m")))
        recount(touched)
        cursor.last_id, cursor.last_feedback_id = max(top, cursor.last_id), max(feedback_top, cursor.last_feedback_id)
        cursor.save(update_fields=["last_id", "last_feedback_id", "updated_at"])
    return top >= newest, len(touched)


def recount(buckets: set[tuple[int, dt.datetime]]) -> None:
    """Recount these 5-minute buckets from raw rows, then re-sum the hours and days that hold them."""
    deployments = Deployment.objects.in_bulk({d for d, _ in buckets})
    profiles = _ProfileCache()
    hours = set()
    for deployment_id, start in sorted(buckets):
        deployment = deployments.get(deployment_id)
        if deployment is None:
            continue
        _recount_five_minutes(deployment, start, profiles)
        hours.add((deployment_id, floor(start, "1h")))
    days = set()
    for deployment_id, start in sorted(hours):
        _resum(deployment_id, "1h", start)
        days.add((deployment_id, floor(start, "1d")))
    for deployment_id, start in sorted(days):
        _resum(deployment_id, "1d", start)


def rebuild_without_reference(profile: ReferenceProfile, *, days: int = 30) -> int:
    """Recount the recent buckets of this profile's version that were counted before the reference existed."""
    since = timezone.now() - dt.timedelta(days=days)
    buckets = set(Rollup.objects.filter(model_version=profile.model_version, bucket="5m", reference__isnull=True,
                                        start__gte=since).values_list("deployment_id", "start"))
    with transaction.atomic():
        recount(buckets)
    return len(buckets)


class _ProfileCache(dict):
    def get_for(self, deployment, version_id: int):
        key = (deployment.pk, version_id)
        if key not in self:
            from apps.registry.models import ModelVersion

            version = ModelVersion.objects.filter(pk=version_id).select_related("training_dataset", "model").first()
            self[key] = (version, reference.profile_for(deployment, version) if version else None)
        return self[key]


def _recount_five_minutes(deployment, start: dt.datetime, profiles: _ProfileCache) -> None:
    end = start + BUCKETS["5m"]
    groups: dict[tuple[int, bool], _Counter] = {}
    rows = (PredictionLog.objects.filter(deployment=deployment, created_at__gte=start, created_at__lt=end)
            .exclude(model_version__isnull=True)
            .values_list("model_version_id", "role", "status_code", "latency_ms", "caller", "row_count", "inputs",
                         "outputs"))
    for version_id, role, status, latency, caller, row_count, inputs, outputs in rows.iterator(chunk_size=CHUNK_ROWS):
        key = (version_id, role == PredictionLog.Role.SHADOW)
        counter = groups.get(key)
        if counter is None:
            version, profile = profiles.get_for(deployment, version_id)
            counter = groups[key] = _Counter(profile)
        counter.add(status, latency, caller, row_count, inputs, outputs)
    labelled = defaultdict(lambda: ([], []))
    for version_id, label, prediction in (GroundTruth.objects
                                          .filter(deployment=deployment, predicted_at__gte=start, predicted_at__lt=end)
                                          .exclude(model_version__isnull=True)
                                          .values_list("model_version_id", "label", "prediction")):
        labelled[version_id][0].append(label)
        labelled[version_id][1].append(prediction)
    made = []
    for (version_id, shadow), counter in groups.items():
        fields = counter.finish()
        if not shadow and version_id in labelled:
            version, _ = profiles.get_for(deployment, version_id)
            labels, predictions = labelled[version_id]
            fields["performance"] = performance.statistics(task_kind(version, labels), labels, predictions)
        made.append(Rollup(deployment=deployment, model_version_id=version_id, shadow=shadow, bucket="5m",
                           start=start, reference=counter.profile, **fields))
    Rollup.objects.filter(deployment=deployment, bucket="5m", start=start).delete()
    Rollup.objects.bulk_create(made)


def task_kind(version, labels: list) -> str:
    task = getattr(getattr(version, "model", None), "task_type", "")
    if task in ("classification", "regression"):
        return task
    distinct = {performance.normalise_label(v) for v in labels[:1000]}
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels[:1000])
    return "regression" if numeric and len(distinct) > 20 else "classification"


class _Counter:
    """The counts of one (version, shadow) group of one 5-minute bucket, fed one logged request at a time."""

    def __init__(self, profile: ReferenceProfile | None) -> None:
        self.profile = profile
        self.requests = self.rows = self.errors = 0
        self.latencies: list[float] = []
        self.callers: set[str] = set()
        self.columns: dict[str, list] = defaultdict(list)
        self.scored_rows = 0  # rows of answered requests: the denominator of missing shares
        self.outputs: list = []

    def add(self, status, latency, caller, row_count, inputs, outputs) -> None:
        self.requests += 1
        self.rows += row_count or 0
        if latency is not None:
            self.latencies.append(latency)
        if caller and len(self.callers) < MAX_CALLERS:
            self.callers.add(caller)
        if status >= 400:
            self.errors += 1
            return
        if isinstance(inputs, dict) and inputs.get("data"):
            data = inputs["data"]
            self.scored_rows += len(data)
            for name, values in zip(inputs.get("columns") or [], zip(*data, strict=False), strict=False):
                self.columns[name].extend(values)
            # A column a request left out is missing for each of its rows.
            for name in self.columns.keys() - set(inputs.get("columns") or []):
                self.columns[name].extend([None] * len(data))
        if isinstance(outputs, list):
            self.outputs.extend(outputs)

    def finish(self) -> dict:
        hist = np.bincount(np.searchsorted(LATENCY_EDGES, np.asarray(self.latencies, dtype=np.float64)),
                           minlength=len(LATENCY_EDGES) + 1)
        fields = {"requests": self.requests, "rows": self.rows, "errors": self.errors,
                  "callers": sorted(self.callers), "latency_sum": float(sum(self.latencies)),
                  "latency_hist": hist.tolist(), "features": {}, "predictions": {}, "performance": {}}
        reference_features = self.profile.features if self.profile else {}
        for name, values in self.columns.items():
            values = values + [None] * (self.scored_rows - len(values))  # columns first seen mid-bucket
            ref = reference_features.get(name)
            if ref is not None:
                fields["features"][name] = drift.count_column(ref, np.asarray(values, dtype=object))
            else:
                missing = sum(v is None or (isinstance(v, float) and v != v) for v in values)
                fields["features"][name] = {"n": len(values), "missing": missing, "out_of_range": 0}
        if self.outputs:
            scalars = reference.scalar_predictions(self.outputs)
            ref = self.profile.predictions if self.profile else None
            if ref:
                counted = drift.count_column(ref, np.asarray(scalars, dtype=object))
            else:
                counted = {"n": len(scalars), "missing": sum(v is None for v in scalars), "out_of_range": 0}
            numbers = drift.as_float(np.asarray(scalars, dtype=object))
            counted["sum"] = float(np.nansum(numbers)) if np.any(~np.isnan(numbers)) else None
            fields["predictions"] = counted
        return fields


# --- Summing ---------------------------------------------------------------------------------------------------


def _resum(deployment_id: int, bucket: str, start: dt.datetime) -> None:
    finer = "5m" if bucket == "1h" else "1h"
    children = (Rollup.objects.filter(deployment_id=deployment_id, bucket=finer, start__gte=start,
                                      start__lt=start + BUCKETS[bucket]).order_by("start"))
    groups: dict[tuple[int, bool], list[Rollup]] = defaultdict(list)
    for child in children:
        groups[(child.model_version_id, child.shadow)].append(child)
    made = []
    for (version_id, shadow), rows in groups.items():
        merged = merge(rows)
        made.append(Rollup(deployment_id=deployment_id, model_version_id=version_id, shadow=shadow, bucket=bucket,
                           start=start, **merged))
    Rollup.objects.filter(deployment_id=deployment_id, bucket=bucket, start=start).delete()
    Rollup.objects.bulk_create(made)


def merge(rows) -> dict:
    """Sum rollups (of one version, or of several when a window spans versions): the fields of one Rollup.

    Bins are only summed among rows counted against the same reference (the most recent one wins)."""
    rows = list(rows)
    reference_id = next((r.reference_id for r in reversed(rows) if r.reference_id), None)
    merged = {"requests": 0, "rows": 0, "errors": 0, "latency_sum": 0.0, "callers": set(), "latency_hist": None,
              "features": {}, "predictions": {}, "performance": {}, "reference_id": reference_id}
    for r in rows:
        # Only the fields the caller loaded (readers defer the JSON they do not need; touching it would query).
        loaded = r.__dict__
        merged["requests"] += r.requests
        merged["rows"] += r.rows
        merged["errors"] += r.errors
        merged["latency_sum"] += r.latency_sum
        if len(merged["callers"]) < MAX_CALLERS:
            merged["callers"].update(loaded.get("callers") or ())
        if loaded.get("latency_hist"):
            hist = np.asarray(r.latency_hist, dtype=np.int64)
            merged["latency_hist"] = hist if merged["latency_hist"] is None else merged["latency_hist"] + hist
        same = r.reference_id == reference_id
        for name, stats in (loaded.get("features") or {}).items():
            _add_column(merged["features"].setdefault(name, {}), stats, with_bins=same)
        if loaded.get("predictions"):
            _add_column(merged["predictions"], r.predictions, with_bins=same)
        if loaded.get("performance"):
            merged["performance"] = performance.merge(merged["performance"], r.performance)
    merged["callers"] = sorted(merged["callers"])[:MAX_CALLERS]
    merged["latency_hist"] = [] if merged["latency_hist"] is None else merged["latency_hist"].tolist()
    return merged


def _add_column(into: dict, stats: dict, *, with_bins: bool) -> None:
    for key in ("n", "missing", "out_of_range"):
        into[key] = into.get(key, 0) + (stats.get(key) or 0)
    if stats.get("sum") is not None:
        into["sum"] = (into.get("sum") or 0.0) + stats["sum"]
    if with_bins and stats.get("counts"):
        if into.get("counts") and len(into["counts"]) == len(stats["counts"]):
            into["counts"] = [a + b for a, b in zip(into["counts"], stats["counts"], strict=True)]
        elif not into.get("counts"):
            into["counts"] = list(stats["counts"])


def percentile(hist, q: float) -> float | None:
    """The q-th percentile (0–100) of a latency histogram, interpolated geometrically inside its bin."""
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum()
    if not total:
        return None
    target = total * q / 100
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, target, side="left"))
    index = min(index, len(counts) - 1)
    low = LATENCY_EDGES[index - 1] if index > 0 else LATENCY_EDGES[0] / 1.0932
    high = LATENCY_EDGES[index] if index < len(LATENCY_EDGES) else LATENCY_EDGES[-1] * 1.0932
    before = cumulative[index] - counts[index]
    fraction = (target - before) / counts[index] if counts[index] else 0.5
    return float(low * (high / low) ** min(max(fraction, 0.0), 1.0))
