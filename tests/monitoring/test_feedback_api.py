"""Ground truth through the API and CSV, performance from it, and the metrics / drift / settings endpoints."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.monitoring import metrics, rollups
from apps.monitoring.models import GroundTruth, MonitoringSettings
from tests.monitoring.conftest import customer_rows, log_predictions, ready_reference


def _url(deployment, what: str) -> str:
    return f"/api/v1/deployments/{deployment.slug}/{what}/"


@pytest.fixture
def served(deployment):
    """60 single-row requests answered 10 minutes ago; outputs 1 when income > 50,000."""
    ready_reference(deployment)
    logs = log_predictions(deployment, customer_rows(60, seed=4), at=timezone.now() - dt.timedelta(minutes=10),
                           spread=dt.timedelta(minutes=1))
    return deployment, logs


def test_labels_join_the_logged_predictions_and_give_performance(served, people, api_as):
    deployment, logs = served
    api = api_as(people["scientist"])
    # The truth: the model is right on the first 45 rows and wrong on the last 15.
    items = [{"request_id": log.request_id, "label": log.outputs[0] if i < 45 else 1 - log.outputs[0]}
             for i, log in enumerate(logs)]
    answer = api.post(_url(deployment, "feedback"), items[:1][0], format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json() == {"received": 1, "matched": 1, "pending": 0, "corrected": 0}
    answer = api.post(_url(deployment, "feedback"), {"items": items[1:]}, format="json")
    assert answer.json()["received"] == 59
    rollups.run()
    accuracy = metrics.window_value(deployment, "accuracy", minutes=60)
    assert accuracy.samples == 60 and accuracy.value == pytest.approx(45 / 60)
    # A correction replaces the label and the performance follows.
    fixed = api.post(_url(deployment, "feedback"), [{**item, "label": logs[i + 45].outputs[0]}
                                                   for i, item in enumerate(items[45:])], format="json")
    assert fixed.json()["corrected"] == 15
    assert metrics.window_value(deployment, "accuracy", minutes=60).value == pytest.approx(1.0)
    listed = api.get(_url(deployment, "feedback")).json()
    assert listed["count"] == 60 and listed["results"][0]["correct"] is True
    assert AuditEvent.objects.filter(action="monitoring.feedback_received").count() == 3


def test_a_label_sent_before_the_log_is_written_is_matched_later(deployment, people, api_as):
    api = api_as(people["scientist"])
    answer = api.post(_url(deployment, "feedback"), {"request_id": "not-logged-yet", "label": 1}, format="json")
    assert answer.json()["pending"] == 1
    log = log_predictions(deployment, customer_rows(1, seed=5), at=timezone.now())[0]
    GroundTruth.objects.filter(request_id="not-logged-yet").update(request_id=log.request_id)
    rollups.run()
    label = GroundTruth.objects.get(request_id=log.request_id)
    assert label.predicted_at == log.created_at and label.prediction == log.outputs[0]


def test_csv_upload_of_labels(served, people, api_as):
    deployment, logs = served
    lines = ["request_id,label"] + [f"{log.request_id},{log.outputs[0]}" for log in logs[:10]]
    upload = SimpleUploadedFile("labels.csv", "\n".join(lines).encode(), content_type="text/csv")
    answer = api_as(people["admin"]).post(_url(deployment, "feedback"), {"file": upload}, format="multipart")
    assert answer.status_code == 201 and answer.json()["matched"] == 10
    assert GroundTruth.objects.filter(source="csv").count() == 10


@pytest.mark.parametrize("body, field", [
    ({"label": 1}, "items[0].request_id"),
    ({"request_id": "r1"}, "items[0].label"),
    ({"request_id": "r1", "label": [1, 2]}, "items[0].label"),
    ({"request_id": "r1", "label": 1, "row": -1}, "items[0].row"),
    ({"request_id": "r1", "label": 1, "status": "x"}, "items[0].non_field_errors"),
    ([], "items"),
    ([{"request_id": "r1", "label": 1}, {"request_id": "r1", "label": 0}], "items[1].row"),
])
def test_bad_labels_are_refused_naming_the_field_and_nothing_is_stored(deployment, people, api_as, body, field):
    answer = api_as(people["scientist"]).post(_url(deployment, "feedback"), body, format="json")
    assert answer.status_code == 400
    assert field in answer.json()["errors"], answer.json()
    assert not GroundTruth.objects.exists()


def test_bad_csv_is_refused(deployment, people, api_as):
    upload = SimpleUploadedFile("labels.csv", b"id,outcome\nr1,1\n", content_type="text/csv")
    answer = api_as(people["scientist"]).post(_url(deployment, "feedback"), {"file": upload}, format="multipart")
    assert answer.status_code == 400 and "file" in answer.json()["errors"]


def test_feedback_permissions(deployment, people, api_as):
    body = {"request_id": "r1", "label": 1}
    assert api_as(people["viewer"]).post(_url(deployment, "feedback"), body, format="json").status_code == 403
    assert api_as(people["approver"]).post(_url(deployment, "feedback"), body, format="json").status_code == 403
    assert api_as(people["outsider"]).post(_url(deployment, "feedback"), body, format="json").status_code == 404
    assert api_as(people["outsider"]).get(_url(deployment, "metrics")).status_code == 404
    assert api_as(people["viewer"]).get(_url(deployment, "feedback")).status_code == 200
    from rest_framework.test import APIClient

    assert APIClient().get(_url(deployment, "metrics")).status_code in (401, 403)


def test_metrics_endpoint(served, people, api_as):
    deployment, _ = served
    rollups.run()
    api = api_as(people["viewer"])
    summary = api.get(_url(deployment, "metrics")).json()
    assert summary["summary"]["requests"] == 60 and "error_rate" in summary["metrics"]
    series = api.get(_url(deployment, "metrics"), {"metric": "requests", "bucket": "5m"}).json()
    assert sum(p["value"] for p in series["points"]) == 60 and series["bucket"] == "5m"
    for params, field in [({"metric": "nope"}, "metric"), ({"metric": "requests", "from": "yesterday"}, "from"),
                          ({"metric": "requests", "from": "2026-11-20", "to": "2026-11-19"}, "from"),
                          ({"metric": "requests", "bucket": "2m"}, "bucket"),
                          ({"metric": "requests", "feature": "age"}, "feature"),
                          ({"metric": "requests", "from": "2020-01-01", "to": "2026-01-01"}, "from")]:
        answer = api.get(_url(deployment, "metrics"), params)
        assert answer.status_code == 400 and field in answer.json()["errors"], (params, answer.json())
    drift = api.get(_url(deployment, "drift")).json()
    assert drift["reference"]["rows"] == 200 and {f["name"] for f in drift["features"]} == {"age", "income", "tenure"}


def test_monitoring_settings(deployment, people, api_as, training):
    url = _url(deployment, "monitoring")
    assert api_as(people["viewer"]).patch(url, {"value_per_prediction": "0.5"}, format="json").status_code == 403
    api = api_as(people["scientist"])
    answer = api.patch(url, {"value_per_prediction": "0.5", "reference_dataset": str(training.uuid)}, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["value_per_prediction"] == "0.5000"
    assert MonitoringSettings.objects.get(deployment=deployment).reference_dataset == training
    for body, field in [({"value_per_prediction": "-1"}, "value_per_prediction"),
                        ({"reference_dataset": "00000000-0000-0000-0000-000000000000"}, "reference_dataset"),
                        ({"deployment": "other"}, "deployment"), ({"retrain_every_days": 9999}, "retrain_every_days")]:
        bad = api.patch(url, body, format="json")
        assert bad.status_code == 400 and field in bad.json()["errors"], (body, bad.json())
    assert AuditEvent.objects.filter(action="monitoring.settings_changed").count() == 1


@pytest.mark.parametrize("what", ["metrics", "drift", "monitoring", "feedback"])
def test_every_monitoring_endpoint_answers_viewers_and_hides_from_outsiders(deployment, people, api_as, what):
    assert api_as(people["outsider"]).get(_url(deployment, what)).status_code == 404
    assert api_as(people["viewer"]).get(_url(deployment, what)).status_code == 200
    assert api_as(people["outsider"]).patch(_url(deployment, "monitoring"), {"value_unit": "EUR"},
                                            format="json").status_code == 404
