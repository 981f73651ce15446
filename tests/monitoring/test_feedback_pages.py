"""The outcomes (ground truth) upload page and the monitoring settings page, for each role."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.monitoring.models import GroundTruth, MonitoringSettings
from tests.monitoring.conftest import customer_rows, log_predictions


def test_outcomes_page_upload_and_errors(deployment, people, client_as):
    logs = log_predictions(deployment, customer_rows(5, seed=2), at=timezone.now())
    url = f"/deployments/{deployment.slug}/feedback/"
    client = client_as(people["scientist"])
    page = client.get(url)
    assert page.status_code == 200 and b"No outcomes yet." in page.content and b"feedback-form" in page.content
    csv = "request_id,label\n" + "\n".join(f"{log.request_id},1" for log in logs)
    done = client.post(url, {"file": SimpleUploadedFile("outcomes.csv", csv.encode())}, follow=True)
    assert b"5 labels received: 5 matched" in done.content
    assert GroundTruth.objects.filter(deployment=deployment).count() == 5
    bad = client.post(url, {"file": SimpleUploadedFile("outcomes.csv", b"request_id,label\nr1,\n")})
    assert bad.status_code == 200 and b"1 of 1 labels were refused" in bad.content
    assert GroundTruth.objects.filter(deployment=deployment).count() == 5


def test_outcomes_page_permissions(deployment, people, client_as, client):
    url = f"/deployments/{deployment.slug}/feedback/"
    viewer = client_as(people["viewer"]).get(url)
    assert viewer.status_code == 200 and b"feedback-form" not in viewer.content
    upload = {"file": SimpleUploadedFile("o.csv", b"request_id,label\nr1,1\n")}
    assert client_as(people["viewer"]).post(url, upload).status_code == 403
    assert client_as(people["outsider"]).get(url).status_code == 404
    assert client.get(url).status_code == 302


def test_settings_page(deployment, people, client_as, training):
    url = f"/deployments/{deployment.slug}/monitoring/settings/"
    viewer = client_as(people["viewer"])
    assert b"Only the project's scientists and admins" in viewer.get(url).content
    assert viewer.post(url, {"value_per_prediction": "1"}).status_code == 403
    scientist = client_as(people["scientist"])
    form = {"reference_dataset": training.pk, "value_per_prediction": "0.25", "value_unit": "EUR",
            "retrain_with_feedback": "on", "retrain_feedback_days": "30", "retrain_every_days": "7"}
    assert scientist.post(url, form).status_code == 302
    saved = MonitoringSettings.objects.get(deployment=deployment)
    assert saved.reference_dataset == training and saved.retrain_every_days == 7
    assert str(saved.value_per_prediction) == "0.2500"
    bad = scientist.post(url, {**form, "value_per_prediction": "-3"})
    assert bad.status_code == 200 and b"greater than or equal to 0" in bad.content
    assert client_as(people["outsider"]).get(url).status_code == 404


def test_the_audit_packet_has_a_monitoring_section(deployment, people):
    from apps.approvals.packet import build_packet
    from apps.monitoring import rollups

    log_predictions(deployment, customer_rows(20, seed=3), at=timezone.now() - timezone.timedelta(minutes=3))
    rollups.run()
    html = build_packet(deployment.champion, user=people["approver"])
    assert "While it served" in html and "Churn live" in html and "No outcomes sent back" in html
