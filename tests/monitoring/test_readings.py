"""The plain-language readings under each chart, from plain numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.monitoring import readings


@pytest.mark.parametrize(("share", "text"), [(0.38, "38%"), (0.004, "0.4%"), (0, "0%"), (0.05, "5%"), (1, "100%")])
def test_percent_rounds_for_people(share, text):
    assert readings.percent(share) == text


def test_traffic_fall_reads_like_the_issue():
    assert readings.traffic(620, 1000, period="this week", before="the week before") == (
        "Predictions per day fell 38% this week (620 against 1,000 the week before).")


def test_traffic_rise_steady_and_empty():
    assert "rose 50%" in readings.traffic(1500, 1000)
    assert "held steady" in readings.traffic(1010, 1000)
    assert readings.traffic(0, 0) == readings.NO_REQUESTS
    assert readings.traffic(0, None) == "No requests in this period yet."
    assert readings.traffic(0, 40).startswith("No requests in this period, after 40")
    assert readings.traffic(12, None) == "12 requests in this period; none the period before to compare with."


def test_period_words_name_the_picker_ranges():
    assert readings.period_words(24 * 7) == ("this week", "the week before")
    assert readings.period_words(6)[0] == "in the last 6 hours"
    assert readings.period_words(50) == ("in this period", "the period before")


def test_latency_names_the_95th_percentile():
    assert readings.latency(12.0, 41.2, 60, requests=100) == (
        "95% of requests were answered within 41 ms (half within 12 ms).")
    assert "slowest 1% took over 1.2 s" in readings.latency(10, 100, 1200, requests=100)
    assert readings.latency(None, None, None, requests=0) == readings.NO_REQUESTS
    assert "not known" in readings.latency(None, None, requests=3)
    assert "4.5 ms" in readings.latency(None, 4.5, requests=3)


def test_errors():
    assert readings.errors(0, 120) == "No errors in this period."
    assert readings.errors(3, 120) == "2.5% of requests failed (3 of 120)."
    assert "prediction log" in readings.errors(30, 120)
    assert readings.errors(0, 0) == readings.NO_REQUESTS


def test_quality_names_the_worst_features():
    text = readings.quality(0.12, 0.04, missing_feature="income", out_of_range_feature="age", requests=10)
    assert text == ("`income` is missing in 12% of rows; 4% of `age` values are outside the range seen in the "
                    "reference.")
    assert readings.quality(0, 0, requests=10) == "No missing or out-of-range values in this period."
    assert readings.quality(None, None, requests=10) == "Data quality is not known for this period."
    assert readings.quality(0.1, 0, requests=0) == readings.NO_REQUESTS
    assert readings.quality(0, 0.2, requests=5).startswith("20% of the worst feature")


def test_drift_names_the_worst_feature():
    features = [{"name": "income", "psi": 0.31, "verdict": "high"}, {"name": "age", "psi": 0.12},
                {"name": "tenure", "psi": 0.01, "verdict": "stable"}]
    assert readings.drift(features) == "`income` has shifted: PSI 0.31, high (and 1 more feature)."
    assert readings.drift(features[:1]) == "`income` has shifted: PSI 0.31, high."
    assert readings.drift([{"name": "age", "psi": 0.04}]) == "No feature has shifted: the largest PSI is 0.04 (`age`)."
    assert readings.drift([{"name": "age", "psi": None}]).startswith("Too few requests")
    assert readings.drift([{"name": "age", "psi": 0.9, "verdict": "too_few"}]).startswith("Too few requests")
    assert readings.drift([], has_reference=False) == readings.NO_REFERENCE
    assert readings.drift([], has_reference=False, reason="Computing the reference.") == "Computing the reference."


def test_feature_shift_points_at_the_bin_that_moved():
    feature = {"name": "income", "psi": 0.4, "labels": ["< 20k", "20k–50k", "≥ 50k"],
               "reference_shares": [0.3, 0.4, 0.3], "current_shares": [0.1, 0.3, 0.6]}
    assert readings.feature_shift(feature) == (
        "`income`: PSI 0.40, high. Most change in ≥ 50k: 60% of values now, 30% in the reference.")
    assert readings.feature_shift({"name": "age", "psi": None}).startswith("Too few values of `age`")


def test_prediction_drift():
    assert readings.prediction_drift({"psi": 0.03}) == "Predictions look like the reference: PSI 0.03, stable."
    assert readings.prediction_drift({"psi": 0.3}).endswith("PSI 0.30, high.")
    assert readings.prediction_drift(None, has_reference=False).startswith("Prediction drift needs reference data")
    assert readings.prediction_drift(None).startswith("Too few predictions")
    assert readings.prediction_drift({"psi": None}).startswith("Too few predictions")
    assert readings.prediction_drift({"psi": 0.5, "verdict": "too_few"}).startswith("Too few predictions")


def test_heatmap_counts_buckets_with_strong_drift():
    data = {"times": [1, 2, 3], "features": ["age", "income"], "psi": [[0.01, 0.02, None], [0.05, 0.3, 0.4]]}
    assert readings.heatmap(data, bucket_word="hours") == "`income` drifted strongly (PSI ≥ 0.25) in 2 of 3 hours."
    calm = {"features": ["age"], "psi": [[0.01, 0.07]]}
    assert readings.heatmap(calm) == ("No feature drifted strongly in any of the buckets: the largest PSI is 0.07 "
                                      "(`age`).")
    assert readings.heatmap({"times": [], "features": [], "psi": []}).startswith("Too few requests")


def test_performance_over_time():
    assert readings.performance("Accuracy", [0.91, None, 0.87], labelled=1204, unit="%", overall=0.89) == (
        "Accuracy is 89% on 1,204 labelled predictions; it went from 91% early in the period to 87% at the end "
        "(worse).")
    assert readings.performance("MAE", [3.2, 2.1], labelled=10, higher_is_better=False) == (
        "MAE is 2.10 on 10 labelled predictions; it went from 3.20 early in the period to 2.10 at the end.")
    assert readings.performance("Accuracy", [0.9], labelled=1, unit="%") == "Accuracy is 90% on 1 labelled prediction."
    assert readings.performance("Accuracy", [], labelled=0).startswith("No labels yet")


def test_adoption_reads_like_the_issue():
    assert readings.adoption([1000, 1100, 1200, 1240]) == (
        "Use grew 24% over the last 4 weeks (1,240 requests in the latest week).")
    assert "fell 50%" in readings.adoption([100, 0, 0, 50])
    assert "held steady" in readings.adoption([100, 100, 100, 101])
    assert readings.adoption([0, 0, 0, 0]) == "No use in the last 4 weeks yet."
    assert readings.adoption([0, 0, 5, 9]).startswith("New in the last 4 weeks: 9 requests")


def test_callers():
    assert readings.callers([0, 2, 4]) == "On average 3 callers a day on the days with use; 4 on the busiest day."
    assert readings.callers([0, 1, 1]) == "On average 1 caller a day on the days with use; 1 on the busiest day."
    assert readings.callers([]) == "No callers yet."


def test_value_reads_like_the_issue():
    assert readings.value(24_800, Decimal("0.5000")) == "≈ $12,400 this month at $0.50 per prediction."
    assert readings.value(10, Decimal("2"), "EUR") == "≈ €20.00 this month at €2.00 per prediction."
    assert readings.value(0, Decimal("1"), "credits").startswith(
        "No predictions this month yet (valued at 1.00 credits")
    assert readings.value(10, None) == ""


def test_traffic_from_almost_nothing_gives_the_counts_not_a_huge_percentage():
    assert readings.traffic(6620, 2, period="this week", before="the week before") == (
        "Predictions per day grew from almost nothing this week: 6,620 requests, against 2 the week before.")
