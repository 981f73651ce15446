"""Anonymisation: the plan is checked, each method transforms as documented, and the result is a new version."""

from __future__ import annotations

import pyarrow as pa
import pytest

from apps.audit.models import AuditEvent
from apps.datasets.anonymise import PlanError, apply_plan, nice_width, validate_plan
from apps.datasets.models import DatasetVersion
from tests.datasets.conftest import run_profiling

SCHEMA = [{"name": "age", "type": "integer"}, {"name": "email", "type": "text"},
          {"name": "when", "type": "datetime"}, {"name": "segment", "type": "categorical"}]


def _batch():
    return pa.RecordBatch.from_pydict({
        "age": [23, 35, None], "email": ["ann@x.org", "bob@y.org", "ann@x.org"],
        "when": pa.array([1_700_000_000_000_000, 1_600_000_000_000_000, None], pa.timestamp("us")),
        "segment": ["gold", "silver", "gold"]})


def test_each_method_transforms_as_documented():
    out = apply_plan(_batch(), {"age": {"method": "generalise", "width": 10.0}, "email": {"method": "hash"},
                                "when": {"method": "generalise", "level": "year"}, "segment": {"method": "drop"}},
                     key=b"k").to_pydict()
    assert out["age"] == ["20–30", "30–40", None]
    assert out["email"][0] == out["email"][2] != out["email"][1] and "@" not in out["email"][0]
    assert out["when"] == ["2023", "2020", None] and "segment" not in out
    masked = apply_plan(_batch(), {"email": {"method": "mask"}}, key=b"k").to_pydict()["email"]
    assert masked == ["a****", "b****", "a****"]


def test_hash_depends_on_the_key():
    one = apply_plan(_batch(), {"email": {"method": "hash"}}, key=b"one").to_pydict()["email"]
    two = apply_plan(_batch(), {"email": {"method": "hash"}}, key=b"two").to_pydict()["email"]
    assert one != two


@pytest.mark.parametrize(("plan", "message"), [
    ({"nope": {"method": "drop"}}, "Unknown column"),
    ({"age": {"method": "shred"}}, "choose one of"),
    ({"email": {"method": "generalise"}}, "only numbers and dates"),
    ({"when": {"method": "generalise", "level": "week"}}, "month or year"),
    ({"age": {"method": "generalise", "width": -1}}, "positive"),
    ({c["name"]: {"method": "drop"} for c in SCHEMA}, "keep at least one"),
])
def test_bad_plans_name_the_problem(plan, message):
    with pytest.raises(PlanError, match=message):
        validate_plan(plan, SCHEMA)


def test_nice_width_gives_round_numbers():
    assert nice_width(0, 97) == 10 and nice_width(0, 1) == 0.1 and nice_width(5, 5) == 1.0


@pytest.mark.django_db
def test_anonymising_creates_a_derived_profiled_version_with_lineage(people, profiled, api_as,
                                                                      django_capture_on_commit_callbacks):
    from apps.datasets import services

    api = api_as(people["scientist"])
    url = f"/api/v1/datasets/{profiled.dataset.uuid}/versions/1/anonymise/"
    assert api_as(people["viewer"]).post(url, {"plan": {"email": {"method": "hash"}}}, format="json").status_code == 403
    bad = api.post(url, {"plan": {"email": {"method": "shred"}}}, format="json")
    assert bad.status_code == 400 and "plan" in bad.json()["errors"]
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(url, {"plan": {"email": {"method": "hash"}, "name": {"method": "drop"},
                                           "age": {"method": "generalise"}}}, format="json")
        assert response.status_code == 202, response.content
        services.anonymise(response.json()["job"]["id"])
    derived = DatasetVersion.objects.get(number=2)
    assert derived.parent == profiled and derived.transformation["plan"]["name"] == {"method": "drop"}
    run_profiling(derived)
    names = [c["name"] for c in derived.schema]
    assert "name" not in names and "email" in names
    rows = api.get(f"/api/v1/datasets/{profiled.dataset.uuid}/versions/2/rows/").json()["results"]
    assert all("@" not in r["email"] for r in rows) and "–" in rows[0]["age"]
    assert AuditEvent.objects.filter(action="dataset.derive").exists()
    # The original is untouched.
    original = api.get(f"/api/v1/datasets/{profiled.dataset.uuid}/versions/1/rows/").json()["results"]
    assert original[0]["email"].endswith("@example.org")


@pytest.mark.django_db
def test_compare_reports_schema_changes_between_versions(people, profiled, api_as, client_as,
                                                         django_capture_on_commit_callbacks):
    from apps.datasets import services

    with django_capture_on_commit_callbacks(execute=False):
        job = services.start_anonymisation(profiled, actor=people["scientist"], plan={"name": {"method": "drop"}})
        services.anonymise(str(job.id))
    run_profiling(DatasetVersion.objects.get(number=2))
    body = api_as(people["viewer"]).get(f"/api/v1/datasets/{profiled.dataset.uuid}/compare/",
                                        {"base": 1, "other": 2}).json()
    assert body["verdict"] in {"warn", "fail"}
    assert any(f["kind"] == "missing_column" and f["column"] == "name" for f in body["findings"])
    page = client_as(people["viewer"]).get(f"/datasets/{profiled.dataset.uuid}/compare/?base=1&other=2")
    assert page.status_code == 200 and 'id="verdict"' in page.content.decode()


@pytest.mark.django_db
def test_hashed_columns_of_a_derived_version_are_no_longer_hidden_from_viewers(
        people, profiled, api_as, django_capture_on_commit_callbacks):
    from apps.datasets import services

    with django_capture_on_commit_callbacks(execute=False):
        job = services.start_anonymisation(profiled, actor=people["scientist"],
                                           plan={"email": {"method": "hash"}, "name": {"method": "mask"}})
        services.anonymise(str(job.id))
    derived = run_profiling(DatasetVersion.objects.get(number=2))
    assert derived.pii_columns == []
    rows = api_as(people["viewer"]).get(f"/api/v1/datasets/{profiled.dataset.uuid}/versions/2/rows/").json()
    assert {"email", "name"} <= set(rows["columns"])
