"""Rollups: correct against a brute-force count of the raw log, idempotent, incremental, and drift that is real."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from apps.deployments.models import PredictionLog
from apps.monitoring import metrics, rollups
from apps.monitoring.models import Rollup
from tests.monitoring.conftest import customer_rows, log_predictions, ready_reference

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)  # a Monday, 09:00 UTC


def _snapshot():
    return sorted((r.deployment_id, r.model_version_id, r.shadow, r.bucket, r.start.isoformat(), r.requests, r.rows,
                   r.errors, round(r.latency_sum, 6), tuple(r.latency_hist), repr(sorted(r.features.items())),
                   repr(sorted(r.predictions.items())), tuple(r.callers))
                  for r in Rollup.objects.all())


@pytest.fixture
def traffic(deployment):
    ready_reference(deployment)
    rng = np.random.default_rng(1)
    rows = customer_rows(600, seed=11)
    for i, row in enumerate(rows[:50]):  # some missing values
        if i % 5 == 0:
            row["income"] = None
    log_predictions(deployment, rows, at=T0, per_request=3, latency_ms=rng.lognormal(1.5, 0.6, 200),
                    spread=dt.timedelta(minutes=55), caller="dashboard")
    log_predictions(deployment, customer_rows(40, seed=12), at=T0 + dt.timedelta(minutes=7), status_code=500,
                    caller="batch-job")
    return deployment


def test_rollups_match_a_brute_force_count_of_the_log(traffic):
    rollups.run(now=T0 + dt.timedelta(days=1))
    logs = list(PredictionLog.objects.filter(deployment=traffic))
    hour = Rollup.objects.get(deployment=traffic, bucket="1h", start=T0)
    day = Rollup.objects.get(deployment=traffic, bucket="1d", start=T0.replace(hour=0))
    five = Rollup.objects.filter(deployment=traffic, bucket="5m")
    assert hour.requests == day.requests == sum(r.requests for r in five) == len(logs) == 240
    assert hour.errors == sum(1 for r in logs if r.status_code >= 400) == 40
    assert hour.rows == sum(r.row_count for r in logs)
    assert sorted(hour.callers) == ["batch-job", "dashboard"]
    # Missing values: exactly the Nones written.
    income = hour.features["income"]
    answered = [r for r in logs if r.status_code == 200]
    values = [row[1] for r in answered for row in r.inputs["data"]]
    assert income["n"] == len(values) == 600
    assert income["missing"] == sum(v is None for v in values) == 10
    assert sum(income["counts"]) == 590
    # Latency percentiles from the histogram are within one bin (9.3 %) of the exact ones.
    exact = np.percentile([r.latency_ms for r in logs], [50, 95, 99])
    for q, value in zip((50, 95, 99), exact, strict=True):
        approx = rollups.percentile(hour.latency_hist, q)
        assert abs(approx - value) / value < 0.1, (q, approx, value)
    # Predictions: every answered row counted.
    assert hour.predictions["n"] == 600


def test_running_twice_gives_the_same_rows_and_new_logs_are_added_incrementally(traffic):
    later = T0 + dt.timedelta(days=1)
    rollups.run(now=later)
    first = _snapshot()
    assert rollups.run(now=later) == 0
    assert _snapshot() == first
    # A late row for an old bucket and a new hour: both counted on the next run, nothing else changes.
    log_predictions(traffic, customer_rows(6, seed=13), at=T0 + dt.timedelta(minutes=2), spread=dt.timedelta(0))
    log_predictions(traffic, customer_rows(6, seed=14), at=T0 + dt.timedelta(hours=2))
    assert rollups.run(now=later) == 2
    assert Rollup.objects.get(deployment=traffic, bucket="1h", start=T0).requests == 246
    assert Rollup.objects.get(deployment=traffic, bucket="1d", start=T0.replace(hour=0)).requests == 252


def test_drift_is_found_on_a_shift_and_not_on_a_resample_of_the_reference(deployment):
    ready_reference(deployment)
    log_predictions(deployment, customer_rows(3000, seed=21), at=T0, spread=dt.timedelta(hours=1))
    shifted = T0 + dt.timedelta(days=1)
    log_predictions(deployment, customer_rows(3000, seed=22, income_shift=15_000), at=shifted,
                    spread=dt.timedelta(hours=1))
    rollups.run(now=T0 + dt.timedelta(days=2))

    same = metrics.drift_report(deployment, start=T0, end=T0 + dt.timedelta(hours=1))
    assert same["reference"] is not None
    assert {f["verdict"] for f in same["features"]} == {"stable"}, same["features"]

    moved = metrics.drift_report(deployment, start=shifted, end=shifted + dt.timedelta(hours=1))
    verdicts = {f["name"]: f["verdict"] for f in moved["features"]}
    assert verdicts["income"] == "high"
    assert verdicts["age"] == verdicts["tenure"] == "stable"
    assert moved["features"][0]["name"] == "income"
    assert moved["features"][0]["test"] == "KS" and moved["features"][0]["p_value"] < 0.001

    value = metrics.window_value(deployment, "drift_psi", minutes=60, now=shifted + dt.timedelta(hours=1))
    assert value.value >= 0.25 and value.details["feature"] == "income"
    heat = metrics.drift_heatmap(deployment, start=T0, end=T0 + dt.timedelta(days=2), bucket="1d")
    row = heat["psi"][heat["features"].index("income")]
    assert row[0] < 0.1 and row[1] >= 0.25


def test_metrics_read_the_window(traffic):
    rollups.run(now=T0 + dt.timedelta(days=1))
    end = T0 + dt.timedelta(hours=1)
    errors = metrics.window_value(traffic, "error_rate", minutes=60, now=end)
    assert errors.samples == 240 and errors.value == pytest.approx(40 / 240)
    series = metrics.series(traffic, "requests", start=T0, end=end, bucket="5m")
    assert sum(v for _, v, _ in series.points) == 240
    summary = metrics.summary(traffic, start=T0, end=end)
    assert summary["requests"] == 240 and summary["callers"] == 2
    assert summary["missing_share"] == pytest.approx(10 / 600) and summary["missing_share_feature"] == "income"
    daily = metrics.daily_requests([traffic], days=3, now=T0 + dt.timedelta(days=1))
    assert [n for _, n in daily[traffic.pk]] == [0, 240, 0]


def test_a_long_window_reads_days_hours_and_five_minute_edges_and_counts_exactly(deployment):
    """Two days of traffic; windows with ragged edges read as few rows as possible and count every request in them."""
    from apps.monitoring.metrics import _pieces

    for day in range(2):
        log_predictions(deployment, customer_rows(48 * 12, seed=30 + day), at=T0 + dt.timedelta(days=day),
                        spread=dt.timedelta(hours=24))
    rollups.run(now=T0 + dt.timedelta(days=3))
    logs = list(PredictionLog.objects.filter(deployment=deployment).values_list("created_at", flat=True))
    for start, end in [(T0 + dt.timedelta(minutes=7), T0 + dt.timedelta(days=1, hours=3, minutes=2)),
                       (T0.replace(hour=0) + dt.timedelta(days=1), T0 + dt.timedelta(days=2)),
                       (T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=50))]:
        pieces = _pieces(start, end)
        assert len({b for b, _, _ in pieces}) >= 1 and all(a < b for _, a, b in pieces)
        # Every 5-minute bucket that starts inside [start, end) counts whole (rollups are the resolution).
        first = rollups.floor(start, "5m")
        expected = sum(1 for t in logs if first <= t and rollups.floor(t, "5m") < end)
        minutes = int((end - start).total_seconds() // 60)
        assert metrics.window_value(deployment, "requests", minutes=minutes, now=end).value == expected
        assert metrics.requests_between(deployment, start=start, end=end) == expected
    # A day and a bit is one day row, a few hours and a handful of 5-minute rows, not 300.
    pieces = _pieces(T0 - dt.timedelta(hours=9, minutes=5), T0 + dt.timedelta(days=1, hours=2, minutes=10))
    assert [b for b, _, _ in pieces].count("1d") == 1 and len(pieces) <= 5


def test_a_backlog_is_rolled_up_in_batches_with_the_same_result(traffic, monkeypatch):
    rollups.run(now=T0 + dt.timedelta(days=1))
    whole = _snapshot()
    Rollup.objects.all().delete()
    from apps.monitoring.models import RollupCursor

    RollupCursor.objects.update(last_id=0, last_feedback_id=0)
    monkeypatch.setattr(rollups, "BATCH_IDS", 37)  # 240 logged requests: seven transactions
    rollups.run(now=T0 + dt.timedelta(days=1))
    assert _snapshot() == whole
    assert RollupCursor.objects.get().last_id == PredictionLog.objects.order_by("-id").first().id
