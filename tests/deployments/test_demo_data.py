"""`make demo`'s deployment: Churn risk v1 deployed to staging with a day of prediction history, loaded once."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.deployments import protocol
from apps.deployments.models import Deployment, DeploymentEvent, PredictionLog
from apps.deployments.serving import load_serving_model

pytestmark = pytest.mark.django_db

COMMANDS = ("load_demo", "load_demo_models", "load_demo_approvals", "load_demo_deployments")


def load() -> str:
    out = io.StringIO()
    for command in COMMANDS:
        call_command(command, stdout=out)
    return out.getvalue()


def test_demo_deployment_has_a_day_of_real_predictions_and_loading_again_changes_nothing():
    output = load()
    deployment = Deployment.objects.get(name="Churn risk (staging)")
    assert "Demo prediction log for “Churn risk (staging)”" in output
    assert deployment.environment.slug == "staging" and deployment.created_by.username == "scientist"
    assert (deployment.champion.model.name, deployment.champion.number) == ("Churn risk", 1)

    logs = list(PredictionLog.objects.filter(deployment=deployment).select_related("model_version"))
    assert 250 <= len(logs) <= 400
    now = timezone.now()
    times = [log.created_at for log in logs]
    assert min(times) >= now - timedelta(hours=24, minutes=1) and max(times) <= now
    assert max(times) - min(times) > timedelta(hours=18)  # spread over the day, not a burst
    assert len({round(log.latency_ms, 2) for log in logs}) > 50  # varying, not one made-up number
    refused = [log for log in logs if log.status_code != 200]
    assert 1 <= len(refused) <= len(logs) // 10
    assert all(log.status_code == 400 and log.error and log.inputs is None for log in refused)
    assert {log.caller for log in logs} >= {"scientist (retention dashboard)", "viewer"}

    model = load_serving_model(deployment.champion)
    served = [log for log in logs if log.status_code == 200]
    for log in served[:20]:
        assert log.row_count == len(log.inputs["data"]) == len(log.outputs)
        assert log.inputs["columns"] == ["age", "monthly_spend", "tenure_months", "support_calls"]
        frame = protocol.check_rows(protocol.Table(log.inputs["columns"], log.inputs["data"]), model.inputs,
                                    max_rows=1000)
        assert protocol.predictions_list(model.predict(frame)) == log.outputs

    again = load()
    assert "already has" in again
    assert Deployment.objects.count() == 1 and DeploymentEvent.objects.count() == 1
    assert PredictionLog.objects.count() == len(logs)
    assert AuditEvent.objects.filter(action="deployment.create").count() == 1
