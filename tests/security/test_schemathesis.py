"""Schemathesis against the OpenAPI document the portal serves at /api/schema/: every operation, called in-process
through the WSGI application with a real API token, must never answer 5xx, and must answer only status codes,
content types and bodies its schema documents.

Two runs: a project admin who is also site staff (reaches every object the scene seeds, so generated path
parameters sometimes name a real model, version, dataset, deployment, approval...), and a viewer (read-only: most
writes are refused, and the refusals must be documented too). Bounded: positive data only, a fixed seed, a few
examples per operation, no shrinking and no deadline. Each operation is its own pytest item with its own database
transaction, so writes made while testing one operation never reach another.
"""

from __future__ import annotations

import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from apps.accounts import services as account_services
from apps.accounts.models import GroupMapping, Notification
from apps.approvals import services as approvals
from apps.audit.models import AuditEvent
from apps.core import storage
from apps.core.models import Job
from apps.datasets.models import DatasetVersion
from apps.deployments.models import BatchRun, DeploymentToken, PredictionLog
from apps.monitoring.models import Alert, RetrainingRun
from tests.security.test_api_abuse import ANSWERS, scene  # noqa: F401  (the shared scene of objects)

# No operation needs leaving out: the MLflow scoring endpoint (/api/v1/deployments/<slug>/invocations) is not in
# the schema (a plain Django view, see tests/security/test_access_matrix.py NOT_IN_SCHEMA), and the file downloads
# (package, prediction export, audit packet) are checked like any other answer.

# Known mismatches, each with why: the check named is skipped for that operation only (every other check, 5xx
# included, still runs).
KNOWN = {
    "GET /api/v1/model-versions/{ref}/audit-packet/": (
        "content_type_conformance", "a client asking for the HTML packet (`?format=html`) gets its errors as the "
        "portal's HTML error page too; the schema documents JSON errors only"),
}

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance"]


def _config(max_examples: int) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 9,
        "generation": {"mode": "positive", "max-examples": max_examples, "no-shrink": True, "deterministic": True},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })


def _load_schema() -> dict:
    # The document exactly as served (anonymous, as a script fetches it before it has a token).
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200, response.content[:500]
    return response.json()


RAW = None


def served_schema(max_examples: int = 1):
    """The served schema as a schemathesis schema whose cases call the portal's WSGI app in-process."""
    global RAW
    if RAW is None:
        RAW = _load_schema()
    schema = schemathesis.openapi.from_dict(RAW, config=_config(max_examples))
    schema.app = get_wsgi_application()
    return schema


# Real objects path parameters may name, filled per test by the `seeded` fixture (read when a case is drawn).
REAL: dict[str, str] = {}


def _real_parameters(path: str, names: list[str]) -> dict[str, str]:
    found = {}
    for name in names:
        for prefix, key in REAL_KEYS.get(name, []):
            if path.startswith(prefix):
                found[name] = REAL.get(key)
                break
    return {name: value for name, value in found.items() if value is not None}


REAL_KEYS = {
    "uuid": [("/api/v1/alert-rules/", "rule"), ("/api/v1/alerts/", "alert"), ("/api/v1/audit/events/", "event"),
             ("/api/v1/datasets/", "dataset"), ("/api/v1/sso/group-mappings/", "mapping")],
    "ref": [("/api/v1/approvals/", "approval"), ("/api/v1/environments/", "environment"),
            ("/api/v1/model-versions/", "version"), ("/api/v1/models/", "model"),
            ("/api/v1/retraining-runs/", "retraining")],
    "slug": [("/api/v1/deployments/", "deployment"), ("/api/v1/projects/", "project")],
    "model_slug": [("/api/v1/models/", "model")],
    "project_slug": [("/api/v1/projects/", "project")],
    "dataset_uuid": [("/api/v1/datasets/", "dataset")],
    "number": [("/api/v1/", "number")],
    "username": [("/api/v1/", "member")],
    "id": [("/api/v1/jobs/", "job"), ("/api/v1/notifications/", "notification"), ("/api/v1/tokens/", "token")],
    "run": [("/api/v1/", "batch")],
    "record_id": [("/api/v1/", "record")],
    "token": [("/api/v1/", "deployment_token")],
}


def _with_real_objects(context, path_parameters):
    """Half the cases name the scene's real objects instead of generated values."""
    operation = context.operation
    names = [p.name for p in operation.path_parameters]
    if not names:
        return st.just(path_parameters)
    real = st.builds(lambda: {**path_parameters, **_real_parameters(operation.path, names)})
    return st.one_of(real, st.just(path_parameters))


@pytest.fixture
def wsgi_in_test_transaction(settings):
    # A raw WSGI call fires request_started/finished, which would close the test's connection mid-transaction;
    # Django's own test client disconnects the same handler.
    settings.ALLOWED_HOSTS = ["localhost"]  # schemathesis' WSGI transport
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(scene, people, project, wsgi_in_test_transaction):  # noqa: F811
    """The shared scene plus one of each object a path parameter can name, their ids in REAL."""
    admin, scientist = people["admin"], people["scientist"]
    deployment, version = scene["deployment"], scene["version"]
    approval = approvals.request_approval(version, scene["staging"], actor=scientist, justification="Ready",
                                          answers=ANSWERS)
    job = Job.objects.create(kind="system_check", created_by=admin, project=project)
    alert = Alert.objects.create(rule=scene["rule"], severity="critical", title="Errors above 5 %")
    batch = BatchRun.objects.create(deployment=deployment, model_version=version, source_name="x.csv",
                                    request_id="b1", created_by=scientist,
                                    job=Job.objects.create(kind="batch_score", created_by=scientist, project=project))
    record = PredictionLog.objects.create(record_id=uuid.uuid4(), request_id="r1", deployment=deployment,
                                          model_version=version, created_at=timezone.now(), status_code=200,
                                          row_count=1, inputs={"columns": ["age"], "data": [[40]]}, outputs=[1])
    deployment_token = DeploymentToken.objects.create(deployment=deployment, name="app", key_hash="e" * 64,
                                                      key_hint="pd_eeee", created_by=scientist)
    retraining = RetrainingRun.objects.create(deployment=deployment, base_version=version, created_by=scientist)
    mapping = GroupMapping.objects.create(group="analysts", project=project, role="viewer", created_by=admin)
    # The grid reads the version's Parquet copy; the scene's row has none.
    table = io.BytesIO()
    pq.write_table(pa.table({"age": [40, 51], "plan": ["basic", "pro"]}), table)
    stored = storage.save_stream("datasets", [table.getvalue()], filename="x.parquet")
    DatasetVersion.objects.filter(pk=scene["dataset_version"].pk).update(parquet_name=stored.name)
    REAL.clear()
    REAL.update({
        "project": project.slug, "model": scene["model"].slug, "version": str(version.uuid), "number": "1",
        "dataset": str(scene["dataset"].uuid), "deployment": deployment.slug, "approval": str(approval.uuid),
        "environment": str(scene["staging"].uuid), "rule": str(scene["rule"].uuid), "alert": str(alert.uuid),
        "job": str(job.id), "member": "scientist", "batch": str(batch.uuid), "record": str(record.record_id),
        "deployment_token": str(deployment_token.uuid), "retraining": str(retraining.uuid),
        "mapping": str(mapping.uuid), "event": str(AuditEvent.objects.order_by("-sequence").first().uuid),
    })
    yield people
    REAL.clear()


def _token_header(user) -> dict[str, str]:
    _, key = account_services.create_token(actor=user, name="schemathesis")
    return {"Authorization": f"Token {key}"}


@pytest.fixture
def as_staff_admin(seeded):
    """A project admin who is also site staff, with a second token and a notification of their own to aim at."""
    admin = seeded["admin"]
    admin.is_staff = True
    admin.save(update_fields=["is_staff"])
    return _caller(admin)


@pytest.fixture
def as_viewer(seeded):
    return _caller(seeded["viewer"])


def _caller(user) -> dict[str, str]:
    other, _ = account_services.create_token(actor=user, name="another")
    note = Notification.objects.create(recipient=user, kind="approval.requested", title="Waiting", url="/")
    REAL.update({"token": str(other.id), "notification": str(note.uuid)})
    return _token_header(user)


SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))

admin_schema = served_schema(6)
admin_schema.hook("flatmap_path_parameters")(_with_real_objects)
viewer_schema = served_schema(3)
viewer_schema.hook("flatmap_path_parameters")(_with_real_objects)


@admin_schema.parametrize()
@settings(**SETTINGS)
def test_api_matches_its_schema_as_a_staff_project_admin(case, as_staff_admin):
    _call_and_validate(case, as_staff_admin)


@viewer_schema.parametrize()
@settings(**SETTINGS)
def test_api_matches_its_schema_as_a_viewer(case, as_viewer):
    _call_and_validate(case, as_viewer)


def _call_and_validate(case, headers: dict[str, str]) -> None:
    known = KNOWN.get(f"{case.method.upper()} {case.path}")
    excluded = [getattr(schemathesis.checks, known[0])] if known else []
    case.call_and_validate(headers=headers, excluded_checks=excluded)
