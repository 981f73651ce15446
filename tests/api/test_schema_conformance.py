"""Regression tests for what the schemathesis run (tests/security/test_schemathesis.py) found: each answer below was
a 500 or did not match the OpenAPI document the portal serves. Each is one request through the same WSGI app,
validated against that document by schemathesis' own checks."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from apps.accounts import services as account_services
from apps.accounts.models import Notification
from apps.core.models import Job
from apps.deployments.models import PredictionLog
from apps.monitoring.models import Alert, RetrainingRun
from tests.security.test_api_abuse import scene  # noqa: F401  (the shared scene of objects)
from tests.security.test_schemathesis import served_schema, wsgi_in_test_transaction  # noqa: F401

SCHEMA = served_schema()


@pytest.fixture
def call(wsgi_in_test_transaction, people):  # noqa: F811
    """Call one operation as a user (a real token) and check the answer against the served schema."""

    def _call(user: str, method: str, path: str, *, expect: int, **case):
        _, key = account_services.create_token(actor=people[user], name="schema")
        response = SCHEMA[path][method].Case(**case).call_and_validate(headers={"Authorization": f"Token {key}"})
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    return _call


# --- 500s ----------------------------------------------------------------------------------------------------


def test_comparing_without_version_numbers_is_a_400_naming_the_field(call, scene):  # noqa: F811
    """compare.parse_numbers() raised Django's ValidationError outside the view's service call: a 500."""
    body = call("viewer", "GET", "/api/v1/models/{ref}/compare/", path_parameters={"ref": scene["model"].slug},
                expect=400)
    assert "versions" in body["errors"]


def test_a_malformed_dataset_uuid_in_the_path_is_a_404_not_a_500(call, scene):  # noqa: F811
    """The route accepts any 36 hex-or-dash characters; the UUID lookup then raised ValidationError (a 500).
    A dataset named by something that is not a UUID does not exist, like any unknown one."""
    body = call("admin", "POST", "/api/v1/datasets/{dataset_uuid}/versions/{number}/reveal/",
                path_parameters={"dataset_uuid": "56f9-9c0cf50ea525369a25f28a710757e0b", "number": 1},
                body={"column": "age"}, media_type="application/json", expect=404)
    assert body["detail"]


def test_packaging_a_champion_whose_files_are_gone_is_a_409_naming_the_champion(call, scene):  # noqa: F811
    """A champion pointing at an MLflow model the store does not have: MlflowException was a 500."""
    version = scene["version"]
    version.mlflow_model_uri = f"models:/portal.never-registered-{uuid.uuid4().hex}/1"
    version.save(update_fields=["mlflow_model_uri"])
    body = call("scientist", "GET", "/api/v1/deployments/{slug}/package/",
                path_parameters={"slug": scene["deployment"].slug}, expect=409)
    assert "missing from the model store" in body["errors"]["champion"][0]


# --- Answers the schema did not describe ------------------------------------------------------------------


def test_error_answers_are_documented_with_the_error_body(call, scene):  # noqa: F811
    # Not documented before: every 4xx failed schemathesis' status code check.
    operation = SCHEMA.raw_schema["paths"]["/api/v1/deployments/{slug}/"]["patch"]
    assert {"400", "401", "403", "404", "409", "413", "415"} <= set(operation["responses"])
    assert SCHEMA.raw_schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]["429"]
    call("viewer", "PATCH", "/api/v1/deployments/{slug}/", path_parameters={"slug": scene["deployment"].slug},
         body={"description": "x"}, media_type="application/json", expect=403)


def test_a_page_past_the_end_of_a_list_is_a_documented_404(call, scene):  # noqa: F811
    call("viewer", "GET", "/api/v1/deployments/", query={"page": 99}, expect=404)


def test_a_deployment_without_challenger_matches_the_schema(call, scene):  # noqa: F811
    body = call("viewer", "GET", "/api/v1/deployments/{slug}/", path_parameters={"slug": scene["deployment"].slug},
                expect=200)
    assert body["challenger_mode"] == ""  # was not in the schema's enum


def test_an_alert_rule_without_webhook_matches_the_schema(call, scene):  # noqa: F811
    body = call("viewer", "GET", "/api/v1/alert-rules/{uuid}/", path_parameters={"uuid": str(scene["rule"].uuid)},
                expect=200)
    assert body["webhook_url"] == ""  # was `format: uri`


def test_an_unacknowledged_alert_and_a_retraining_run_without_alert_match_the_schema(call, scene, people):  # noqa: F811
    alert = Alert.objects.create(rule=scene["rule"], severity="critical", title="Errors above 5 %")
    run = RetrainingRun.objects.create(deployment=scene["deployment"], base_version=scene["version"])
    body = call("viewer", "GET", "/api/v1/alerts/{uuid}/", path_parameters={"uuid": str(alert.uuid)}, expect=200)
    assert body["owner"] is None and body["acknowledged_by"] is None
    body = call("viewer", "GET", "/api/v1/retraining-runs/{ref}/", path_parameters={"ref": str(run.uuid)},
                expect=200)
    assert body["alert"] is None and body["created_by"] is None


def test_hidden_prediction_data_matches_the_schema(call, scene):  # noqa: F811
    PredictionLog.objects.create(record_id=uuid.uuid4(), request_id="r1", deployment=scene["deployment"],
                                 model_version=scene["version"], created_at=timezone.now(), status_code=400,
                                 error="age: 'forty' is not a number")
    body = call("viewer", "GET", "/api/v1/deployments/{slug}/predictions/",
                path_parameters={"slug": scene["deployment"].slug}, expect=200)
    assert body["results"][0]["data_hidden"] and body["results"][0]["error"] is None


def test_site_wide_notifications_jobs_and_audit_events_match_the_schema(call, people):
    Notification.objects.create(recipient=people["viewer"], kind="account.welcome", title="Welcome", url="/")
    Job.objects.create(kind="system_check", created_by=people["staff"])
    body = call("viewer", "GET", "/api/v1/notifications/", expect=200)
    assert body["results"][0]["project"] is None
    body = call("staff", "GET", "/api/v1/jobs/", expect=200)
    assert body["results"][0]["project"] is None
    body = call("viewer", "GET", "/api/v1/audit/events/", expect=200)  # creating the token: no project
    assert any(event["project"] is None for event in body["results"])
