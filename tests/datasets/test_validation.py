"""The validation report: schema, types, ranges, categories, missing spikes and shift, with a verdict."""

from __future__ import annotations

import copy

from apps.datasets.validation import psi, validate

REFERENCE = {
    "row_count": 1000,
    "columns": [
        {"name": "age", "type": "integer", "missing": 0, "missing_pct": 0.0, "distinct": 60, "distinct_is_exact": True,
         "numeric": {"min": 18, "max": 90, "mean": 40, "std": 12},
         "histogram": {"edges": [18, 36, 54, 72, 90], "counts": [300, 400, 200, 100]}},
        {"name": "segment", "type": "categorical", "missing": 0, "missing_pct": 0.0, "distinct": 2,
         "distinct_is_exact": True, "top_values": [{"value": "gold", "count": 600}, {"value": "silver", "count": 400}]},
        {"name": "income", "type": "float", "missing": 20, "missing_pct": 2.0, "distinct": 900,
         "distinct_is_exact": True, "numeric": {"min": 0, "max": 1e5, "mean": 4e4, "std": 1e4}},
    ],
}


def test_identical_profiles_pass():
    report = validate(REFERENCE, reference=REFERENCE)
    assert report.verdict == "pass" and report.findings == []
    assert report.shifts["age"] == 0.0


def test_missing_column_fails_and_extra_column_warns():
    current = copy.deepcopy(REFERENCE)
    current["columns"] = [c for c in current["columns"] if c["name"] != "income"]
    current["columns"].append({"name": "zip", "type": "text", "missing": 0, "missing_pct": 0.0})
    report = validate(current, reference=REFERENCE)
    kinds = {(f.kind, f.column, f.severity) for f in report.findings}
    assert ("missing_column", "income", "fail") in kinds and ("extra_column", "zip", "warn") in kinds
    assert report.verdict == "fail" and "income" in report.summary


def test_type_mismatch_compatible_warns_incompatible_fails():
    report = validate(REFERENCE, expected_schema=[{"name": "age", "type": "float"},
                                                  {"name": "segment", "type": "datetime"}])
    severities = {f.column: f.severity for f in report.findings if f.kind == "type_mismatch"}
    assert severities == {"age": "warn", "segment": "fail"}


def test_out_of_range_unseen_categories_missing_spike_and_shift():
    current = copy.deepcopy(REFERENCE)
    age, segment, income = current["columns"]
    age["numeric"]["max"] = 120
    age["histogram"]["counts"] = [50, 100, 350, 500]
    segment["top_values"].append({"value": "platinum", "count": 50})
    income["missing_pct"] = 45.0
    report = validate(current, reference=REFERENCE)
    kinds = {f.kind for f in report.findings}
    assert {"out_of_range", "unseen_categories", "missing_spike", "shift"} <= kinds
    assert report.shifts["age"] > 0.25 and report.verdict == "fail"
    assert report.as_dict()["findings"][0]["message"]


def test_psi_is_zero_for_equal_and_grows_with_difference():
    assert psi([1, 2, 3], [2, 4, 6]) == 0.0
    assert psi([50, 50], [90, 10]) > psi([50, 50], [60, 40]) > 0
    assert psi([], []) is None and psi([1, 2], [1]) is None
