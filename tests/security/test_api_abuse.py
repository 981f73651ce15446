"""Hostile API input against the real endpoints: broken and oddly typed bodies, bodies built to exhaust the parser
or the database, fields a client must not set, unbounded paging, ordering by secrets, and rate limits.

Every answer is a JSON `{"detail", "errors"}` 4xx naming the field where there is one (shared/API.md), never a 500,
and nothing stored changes. The members and token endpoints' bad input is covered in tests/api/test_bad_input.py
(malformed JSON, 50k-deep nesting, too many form fields, 415 for XML, 413 over the upload limit, wrong field values);
this file covers the rest of the API with the same expectations.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, Membership, Project, User
from apps.approvals import services as approvals
from apps.approvals.models import ApprovalRequest
from apps.core.models import Job
from apps.datasets.models import Dataset, DatasetVersion
from apps.deployments.models import Deployment
from apps.monitoring.models import AlertRule
from apps.registry.models import ModelVersion, RegisteredModel
from tests.api.test_bad_input import assert_error_body
from tests.conftest import PASSWORD
from tests.deployments.conftest import import_skops
from tests.registry.conftest import _mlflow_store, mlflow_store  # noqa: F401  (an MLflow store for real models)

ANSWERS = {"intended_use": "Retention calls", "affected_people": "Customers", "fairness_checked": True,
           "fallback_plan": "Agents call everyone as before"}


@pytest.fixture
def real_version(people, project, django_capture_on_commit_callbacks, settings, tmp_path):
    """A real skops model, imported and servable (only the serving path needs one)."""
    from apps.deployments import predlog, serving

    settings.VAR_DIR, settings.REDIS_URL = tmp_path / "var", ""
    serving.forget_all()
    predlog._redis = None
    yield import_skops(project, people["scientist"], django_capture_on_commit_callbacks)
    serving.forget_all()


@pytest.fixture
def scene(people, project):
    """One of everything a hostile request could aim at, as rows (no model is ever loaded here)."""
    scientist = people["scientist"]
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=scientist,
                                           owner=scientist, intended_use="Retention calls", risk_tier="medium")
    version = ModelVersion.objects.create(
        model=model, number=1, status=ModelVersion.Status.READY, format="skops", created_by=scientist,
        sha256="a" * 64, artifact_sha256="b" * 64, mlflow_model_uri="models:/portal.churn/1",
        signature={"inputs": [{"name": "age", "type": "long"}], "outputs": []})
    sandbox = approvals.create_environment(project, actor=people["admin"], name="sandbox", required_approvals=0)
    staging = approvals.create_environment(project, actor=people["admin"], name="staging", required_approvals=1)
    deployment = Deployment.objects.create(project=project, name="Churn live", slug="churn-live",
                                           environment=sandbox, champion=version, created_by=scientist)
    dataset = Dataset.objects.create(project=project, name="Customers", created_by=scientist)
    dataset_version = DatasetVersion.objects.create(
        dataset=dataset, number=1, created_by=scientist, file_name="x.csv", original_filename="x.csv",
        format="csv", size_bytes=10, sha256="d" * 64, status=DatasetVersion.Status.READY)
    rule = AlertRule.objects.create(deployment=deployment, name="Errors", metric="error_rate", threshold=0.05,
                                    webhook_secret="s3cret-webhook-key", created_by=scientist)
    return {"model": model, "version": version, "sandbox": sandbox, "staging": staging, "deployment": deployment,
            "dataset": dataset, "dataset_version": dataset_version, "rule": rule}


def snapshot() -> dict:
    """Everything a refused request could have changed, by value."""
    return {
        "projects": sorted(Project.objects.values_list("slug", "name", "description")),
        "models": sorted(RegisteredModel.objects.values_list("slug", "name", "project_id", "owner_id", "created_by_id",
                                                             "description", "tags")),
        "versions": sorted(ModelVersion.objects.values_list("uuid", "status", "sha256", "created_by_id", "description",
                                                            "params", "metrics", "tags")),
        "datasets": sorted(DatasetVersion.objects.values_list("uuid", "status", "sha256", "description")),
        "deployments": sorted(Deployment.objects.values_list("slug", "status", "project_id", "champion_id",
                                                             "created_by_id", "description", "generation")),
        "approvals": sorted(ApprovalRequest.objects.values_list("uuid", "status", "requested_by_id")),
        "rules": sorted(AlertRule.objects.values_list("uuid", "name", "threshold", "created_by_id", "deployment_id")),
        "memberships": sorted(Membership.objects.values_list("project_id", "user_id", "role")),
        "tokens": ApiToken.objects.count(),
    }


# (who, method, path, a valid-looking body): one representative write per app.
def targets(scene) -> list[tuple[str, str, str, dict]]:
    version, dataset, deployment = scene["version"], scene["dataset"], scene["deployment"]
    return [
        ("staff", "post", "/api/v1/projects/", {"slug": "gamma", "name": "Gamma"}),
        ("scientist", "post", "/api/v1/datasets/", {"project": "alpha", "name": "Other"}),
        ("scientist", "patch", f"/api/v1/models/{scene['model'].slug}/", {"description": "x"}),
        ("scientist", "patch", f"/api/v1/model-versions/{version.uuid}/", {"description": "x"}),
        ("scientist", "post", "/api/v1/approvals/", {"model_version": str(version.uuid), "environment": "staging",
                                                     "justification": "Ready", "answers": ANSWERS}),
        ("scientist", "patch", f"/api/v1/deployments/{deployment.slug}/", {"description": "x"}),
        ("scientist", "post", f"/api/v1/deployments/{deployment.slug}/feedback/",
         {"request_id": "r1", "label": "1"}),
        ("scientist", "post", "/api/v1/alert-rules/", {"deployment": deployment.slug, "name": "Latency",
                                                       "metric": "error_rate", "threshold": 0.1}),
        ("admin", "post", "/api/v1/environments/", {"project": "alpha", "name": "qa"}),
        ("scientist", "post", f"/api/v1/datasets/{dataset.uuid}/versions/1/anonymise/", {"plan": {}}),
    ]


TARGET_IDS = ["projects", "datasets", "model", "model-version", "approvals", "deployment", "feedback",
              "alert-rules", "environments", "anonymise"]


@pytest.fixture(params=range(len(TARGET_IDS)), ids=TARGET_IDS)
def target(request, scene, people, api_as):
    who, method, path, body = targets(scene)[request.param]
    return api_as(people[who]), method, path, body


# --- Bodies that are not what they claim --------------------------------------------------------------------


@pytest.mark.parametrize("body", ['{"name": ', "{'name': 'x'}", '{"name": NaN}', "\ufeff{}", "null", '"text"', "7"])
def test_invalid_json_is_a_400(body, target):
    api, method, path, _ = target
    before = snapshot()
    response = getattr(api, method)(path, data=body.encode(), content_type="application/json")
    assert_error_body(response, 400)
    assert snapshot() == before


@pytest.mark.parametrize(("who", "path", "field"), [
    ("scientist", "/api/v1/datasets/{dataset}/versions/1/anonymise/", "plan"),
    ("admin", "/api/v1/datasets/{dataset}/versions/1/reveal/", "column"),
    ("admin", "/api/v1/projects/alpha/members/", "user"),
])
def test_a_json_list_where_the_view_reads_fields_is_a_400(who, path, field, scene, people, api_as):
    """Regression: these views read the body with .get() and a JSON list made that an AttributeError (a 500)."""
    api = api_as(people[who])
    path = path.format(dataset=scene["dataset"].uuid)
    before = snapshot()
    method = "delete" if path.endswith("members/") else "post"
    response = getattr(api, method)(path, data=json.dumps([{field: "x"}]), content_type="application/json")
    assert_error_body(response, 400, field=field)
    assert snapshot() == before


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", '{"name": "x"}'),
    ("application/xml", "<name>x</name>"),
    ("text/xml", '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'),
    ("application/x-yaml", "name: !!python/object/apply:os.system ['true']"),
])
def test_a_wrong_content_type_is_a_415(content_type, body, target):
    api, method, path, _ = target
    before = snapshot()
    response = getattr(api, method)(path, data=body, content_type=content_type)
    assert_error_body(response, 415)
    assert snapshot() == before


def test_ten_thousand_deep_nesting_is_a_400(target):
    """The standard library's parser recurses; 10,000 levels overflow it (a RecursionError, formerly a 500 on
    /api/v1/datasets/, which used DRF's own parser)."""
    api, method, path, _ = target
    before = snapshot()
    body = '{"name": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}"
    response = getattr(api, method)(path, data=body, content_type="application/json")
    assert_error_body(response, 400)
    assert snapshot() == before


def test_an_array_bigger_than_the_body_limit_is_a_413(target, settings):
    api, method, path, body = target
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    before = snapshot()
    response = getattr(api, method)(path, data=json.dumps({**body, "tags": list(range(100_000))}),
                                    content_type="application/json")
    assert_error_body(response, 413)
    assert snapshot() == before


@pytest.mark.parametrize(("index", "field", "value"), [
    (2, "tags", {f"k{i}": "v" for i in range(20_000)}),          # model tags: fits the body limit, absurd
    (3, "aliases", ["a"] * 50_000),
    (4, "justification", "j" * 200_000),
    (6, "items", [{"request_id": f"r{i}", "label": "1"} for i in range(20_001)]),
    (7, "name", ["n"] * 50_000),
])
def test_absurd_arrays_within_the_body_limit_are_a_400_naming_the_field(index, field, value, scene, people, api_as):
    who, method, path, body = targets(scene)[index]
    api = api_as(people[who])
    before = snapshot()
    response = getattr(api, method)(path, {**body, field: value}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert_error_body(response, 400)
    assert snapshot() == before


# --- NUL characters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["value", "nested value", "key"])
def test_a_nul_character_is_a_400_naming_the_field(where, target):
    """PostgreSQL refuses NUL in text and jsonb: the parser refuses it first, naming the field, so no endpoint can
    reach the database with one (a 500 on PostgreSQL before; SQLite stored it)."""
    api, method, path, body = target
    field = next(iter(body))
    if where == "value":
        hostile = {**body, field: "bad\u0000value"}
    elif where == "nested value":
        hostile = {**body, field: {"inner": ["ok", "bad\u0000"]}}
    else:
        hostile = {**body, "tags": {"bad\u0000key": "v"}}
        field = "tags"
    before = snapshot()
    response = getattr(api, method)(path, data=json.dumps(hostile), content_type="application/json")
    payload = assert_error_body(response, 400, field=field)
    assert "NUL" in payload["errors"][field][0]
    assert "\x00" not in response.content.decode()
    assert snapshot() == before


def test_a_nul_character_in_a_form_field_is_a_400_naming_it(people, scene, api_as):
    api = api_as(people["scientist"])
    before = snapshot()
    response = api.post("/api/v1/approvals/", {"model_version": str(scene["version"].uuid), "environment": "staging",
                                               "justification": "bad\x00"}, format="multipart")
    assert_error_body(response, 400, field="justification")
    assert snapshot() == before


def test_a_nul_character_in_an_invocation_is_a_400_never_a_500_nor_a_poisoned_log(people, project, real_version,
                                                                                 django_capture_on_commit_callbacks):
    """The serving path parses its own JSON (apps/deployments/protocol.py); a NUL must not reach the prediction log
    (jsonb on PostgreSQL refuses it, and the drain would retry the batch for ever)."""
    from apps.deployments import services as deployments
    from apps.deployments.models import PredictionLog

    sandbox = approvals.create_environment(project, actor=people["admin"], name="sandbox", required_approvals=0)
    deployments.deploy(project, actor=people["scientist"], name="Churn NUL", environment=sandbox,
                       version=real_version)
    api = api_as_viewer(people)
    for body in ({"dataframe_records": [{"age": "4\u00002"}]}, {"dataframe_split": {"columns": ["a\u0000ge"],
                                                                                      "data": [[1]]}}):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/v1/deployments/churn-nul/invocations", data=json.dumps(body),
                                content_type="application/json")
        assert response.status_code == 400, response.content[:300]
        assert response.json()["detail"]
    logged = list(PredictionLog.objects.values_list("inputs", "error"))
    assert "\x00" not in json.dumps(logged), logged


def api_as_viewer(people) -> APIClient:
    from apps.accounts import services as account_services

    _, key = account_services.create_token(actor=people["viewer"], name="caller")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


# --- Mass assignment -----------------------------------------------------------------------------------------------


def _bystander(project) -> User:
    return User.objects.create_user("mallory", password=PASSWORD)


@pytest.mark.parametrize(("index", "forged"), [
    (0, {"created_at": "2001-01-01T00:00:00Z", "my_role": "admin", "id": 1}),
    (2, {"project": "beta", "created_by": "mallory", "id": "00000000-0000-0000-0000-000000000000",
         "slug": "hijacked"}),
    (3, {"status": "ready", "sha256": "f" * 64, "created_by": "mallory", "trusted_by": "mallory",
         "artifact_sha256": "e" * 64, "id": "00000000-0000-0000-0000-000000000000", "model": "other"}),
    (4, {"status": "approved", "requested_by": "mallory", "decisions": [{"approver": "mallory",
                                                                          "verdict": "approve"}]}),
    (5, {"project": "beta", "created_by": "mallory", "slug": "hijacked", "champion": 1, "generation": 99,
         "id": "00000000-0000-0000-0000-000000000000", "environment": "production"}),
    (7, {"created_by": "mallory", "id": "00000000-0000-0000-0000-000000000000", "uuid": "x"}),
])
def test_read_only_fields_are_refused_or_ignored_never_applied(index, forged, scene, people, api_as, other_project):
    _bystander(other_project)
    who, method, path, body = targets(scene)[index]
    api = api_as(people[who])
    response = getattr(api, method)(path, {**body, **forged}, format="json")
    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400:
        assert_error_body(response, response.status_code)
    mallory = User.objects.get(username="mallory")
    # Nothing anywhere now belongs to, was made by, or was approved by the forged user, or moved project.
    assert not RegisteredModel.objects.filter(created_by=mallory).exists()
    assert not RegisteredModel.objects.filter(project=other_project).exists()
    assert not ModelVersion.objects.filter(created_by=mallory).exists()
    assert not ModelVersion.objects.filter(sha256="f" * 64).exists()
    assert not ApprovalRequest.objects.filter(requested_by=mallory).exists()
    assert not ApprovalRequest.objects.filter(status=ApprovalRequest.Status.APPROVED).exists()
    assert not Deployment.objects.filter(project=other_project).exists()
    assert not Deployment.objects.filter(slug="hijacked").exists()
    assert Deployment.objects.get(slug="churn-live").champion_id == scene["version"].pk
    assert not AlertRule.objects.filter(created_by=mallory).exists()
    assert not Membership.objects.filter(user=mallory).exists()
    if response.status_code in (200, 201):
        text = response.content.decode()
        assert "mallory" not in text and "hijacked" not in text


def test_a_version_status_cannot_be_forged_out_of_quarantine(scene, people, api_as):
    version = scene["version"]
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUARANTINED)
    response = api_as(people["admin"]).patch(f"/api/v1/model-versions/{version.uuid}/", {"status": "ready"},
                                             format="json")
    assert_error_body(response, 400, field="status")
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.QUARANTINED


def test_a_webhook_secret_is_never_read_back(scene, people, api_as):
    response = api_as(people["scientist"]).get(f"/api/v1/alert-rules/{scene['rule'].uuid}/")
    assert response.status_code == 200
    assert "s3cret-webhook-key" not in response.content.decode()


# --- Paging, ordering, filtering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["page_size=1000000", "page_size=-1", "page_size=0", "limit=1000000",
                                   "page_size=99999999999999999999999"])
def test_page_size_cannot_be_raised_past_the_default(query, people, api_as, settings):
    """DRF's PageNumberPagination reads no page_size parameter (page_size_query_param is None): 50 a page."""
    Job.objects.bulk_create([Job(kind="system_check", created_by=people["viewer"]) for _ in range(60)])
    response = api_as(people["viewer"]).get(f"/api/v1/jobs/?{query}")
    assert response.status_code == 200
    assert len(response.json()["results"]) == settings.REST_FRAMEWORK["PAGE_SIZE"]
    assert response.json()["count"] == 60


@pytest.mark.parametrize("page", ["0", "-1", "abc", "99999999999999999999999", "1e9", "\u0000"])
def test_a_nonsense_page_is_a_404_json_not_a_500(page, people, api_as):
    response = api_as(people["viewer"]).get("/api/v1/jobs/", {"page": page})
    assert_error_body(response, 404)


def test_the_dataset_grid_caps_its_page_size(people, project, django_capture_on_commit_callbacks):
    """The rows endpoint takes page_size (documented "at most 500"): an absurd one is capped, a nonsense one is a
    400 or capped, never a 500."""
    from tests.registry.test_evidence import profiled_training_data

    version = profiled_training_data(project, people["scientist"], django_capture_on_commit_callbacks)
    api = api_as_viewer(people)
    path = f"/api/v1/datasets/{version.dataset.uuid}/versions/{version.number}/rows/"
    response = api.get(path, {"page_size": "100000000"})
    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["results"]) <= 500
    for nonsense in ("-5", "abc", "1e99", "\u0000"):
        response = api.get(path, {"page_size": nonsense, "page": nonsense, "sort": nonsense})
        assert response.status_code in (200, 400), response.content[:300]


def _token_order(api, ordering: str) -> list[str]:
    response = api.get("/api/v1/tokens/", {"ordering": ordering})
    assert response.status_code in (200, 400), response.content[:300]
    return [t["name"] for t in response.json()["results"]] if response.status_code == 200 else []


@pytest.mark.parametrize("field", ["key_hash", "-key_hash", "user__password", "key_hint"])
def test_tokens_cannot_be_ordered_by_their_secret(field, people):
    """If ordering by key_hash were honoured, a caller could learn hash prefixes by creating tokens and watching
    where they land. No viewset has an ordering filter; this keeps it so."""
    from apps.accounts import services as account_services

    user = people["viewer"]
    keys = [account_services.create_token(actor=user, name=f"t{i}")[1] for i in range(6)]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {keys[0]}")
    plain = _token_order(api, "")
    assert _token_order(api, field) in ([], plain)


@pytest.mark.parametrize(("path", "params"), [
    ("/api/v1/users/", {"ordering": "password"}),
    ("/api/v1/alert-rules/", {"ordering": "webhook_secret"}),
    ("/api/v1/alert-rules/", {"webhook_secret": "s3cret-webhook-key"}),
    ("/api/v1/alert-rules/", {"webhook_secret__startswith": "s"}),
    ("/api/v1/tokens/", {"key_hash__startswith": "a"}),
    ("/api/v1/audit/events/", {"ordering": "hash"}),
    ("/api/v1/deployments/", {"ordering": "tokens__key_hash"}),
])
def test_filters_and_ordering_on_secret_fields_are_ignored_or_refused(path, params, scene, people, api_as):
    api = api_as(people["admin"])
    plain = api.get(path)
    response = api.get(path, params)
    assert response.status_code < 500, response.content[:300]
    if response.status_code == 200 and plain.status_code == 200:
        assert response.json() == plain.json(), "a secret-field parameter changed the answer"
    else:
        assert response.status_code in (400, 404, 405) and response.json()["detail"]


# --- Rate limits ----------------------------------------------------------------------------------------------------


def test_the_token_endpoint_answers_429_past_its_rate(people, settings):
    """tests/accounts/test_tokens.py covers the throttle's rate; here: the answer is the API's JSON error shape
    with Retry-After, and wrong passwords count as well as right ones."""
    client = APIClient()
    answers = [client.post("/api/v1/auth/token/", {"username": f"nobody{i}", "password": "x"}, format="json")
               for i in range(30)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    assert_error_body(limited[0], 429)
    assert limited[0].has_header("Retry-After")


# Invocations over a deployment's per-caller limit answer 429 with Retry-After:
# tests/deployments/test_serving.py::test_rate_limit_answers_429_with_retry_after (with a real model).
