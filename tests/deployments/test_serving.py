"""The invocations endpoint as a client sees it: MLflow's payloads, bad input, auth, limits, failures, the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from django.test import Client

from apps.accounts import services as account_services
from apps.deployments import predlog, services, serving
from apps.deployments.models import PredictionLog
from apps.registry.evidence import load_predictor
from tests.deployments.conftest import FEATURES, RaisingModel, SlowModel, custom_version, training_frame


def url(deployment) -> str:
    return f"/api/v1/deployments/{deployment.slug}/invocations"


def split(frame: pd.DataFrame) -> str:
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})


def post(client, deployment, body, content_type="application/json"):
    return client.post(url(deployment), data=body, content_type=content_type)


@pytest.fixture
def deployment(people, project, version, sandbox):
    return services.deploy(project, actor=people["scientist"], name="Churn scoring", environment=sandbox,
                           version=version)


@pytest.fixture
def caller(people, api_as):
    return api_as(people["viewer"])


@pytest.fixture
def rows():
    return training_frame(rows=20, seed=11)[FEATURES]


def expected(version, frame) -> list:
    return load_predictor(version).get_raw_model().predict(frame).tolist()


def test_every_mlflow_payload_shape_gets_the_models_own_predictions(deployment, version, caller, rows):
    want = expected(version, rows)
    records = json.loads(rows.to_json(orient="records"))
    bodies = {
        "dataframe_split": split(rows),
        "dataframe_records": json.dumps({"dataframe_records": records}),
        "instances (objects)": json.dumps({"instances": records}),
        "instances (lists)": json.dumps({"instances": rows.values.tolist()}),
        "inputs (columns)": json.dumps({"inputs": {c: rows[c].tolist() for c in FEATURES}}),
    }
    seen_ids = set()
    for name, body in bodies.items():
        response = post(caller, deployment, body)
        assert response.status_code == 200, (name, response.content)
        assert response.json() == {"predictions": want}, name
        seen_ids.add(response["X-Request-ID"])
    csv = rows.to_csv(index=False)
    response = post(caller, deployment, csv, content_type="text/csv")
    assert response.status_code == 200 and response.json()["predictions"] == want
    seen_ids.add(response["X-Request-ID"])
    assert len(seen_ids) == len(bodies) + 1  # one id per request


def test_the_request_is_logged_with_inputs_outputs_and_caller(deployment, version, caller, rows):
    response = post(caller, deployment, split(rows.head(2)))
    assert predlog.drain() == 1
    log = PredictionLog.objects.get(request_id=response["X-Request-ID"])
    assert log.deployment == deployment and log.model_version == version and log.status_code == 200
    assert log.caller.startswith("viewer") and log.row_count == 2 and log.role == "champion"
    assert log.inputs == {"columns": FEATURES, "data": rows.head(2).values.tolist()}
    assert log.outputs == response.json()["predictions"] and log.latency_ms > 0
    assert predlog.drain() == 0  # drained records are not inserted twice


BAD_INPUTS = [
    ("wrong content type", "a=1", "application/x-www-form-urlencoded", 415, "content_type"),
    ("invalid JSON", '{"dataframe_split": ', "application/json", 400, "body"),
    ("not an object", "[1, 2]", "application/json", 400, "body"),
    ("two formats", '{"instances": [], "inputs": []}', "application/json", 400, "body"),
    ("unknown key", '{"rows": []}', "application/json", 400, "rows"),
    ("unknown column", '{"dataframe_records": [{"age": 30, "income": 1.0, "tenure": 2, "shoe": 1}]}',
     "application/json", 400, "shoe"),
    ("missing column", '{"dataframe_records": [{"age": 30, "income": 1.0}]}', "application/json", 400, "tenure"),
    ("wrong type", '{"dataframe_records": [{"age": "old", "income": 1.0, "tenure": 2}]}', "application/json", 400,
     "age"),
    ("fraction for a whole number", '{"dataframe_records": [{"age": 30.5, "income": 1.0, "tenure": 2}]}',
     "application/json", 400, "age"),
    ("NaN", '{"dataframe_records": [{"age": 30, "income": NaN, "tenure": 2}]}', "application/json", 400, "body"),
    ("Infinity", '{"dataframe_records": [{"age": 30, "income": Infinity, "tenure": 2}]}', "application/json", 400,
     "body"),
    ("null in a required column", '{"dataframe_records": [{"age": null, "income": 1.0, "tenure": 2}]}',
     "application/json", 400, "age"),
    ("ragged rows", '{"dataframe_split": {"columns": ["age", "income", "tenure"], "data": [[1, 2.0]]}}',
     "application/json", 400, "dataframe_split"),
    ("no rows", '{"dataframe_split": {"columns": ["age", "income", "tenure"], "data": []}}', "application/json",
     400, "body"),
    ("deep nesting", '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}", "application/json", 400, "body"),
    ("empty CSV", "", "text/csv", 400, "body"),
    ("not UTF-8", b'{"instances": "\xff\xfe"}', "application/json", 400, "body"),
]


@pytest.mark.parametrize(("name", "body", "content_type", "status", "field"), BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_4xx_naming_the_field(deployment, caller, rows, name, body, content_type, status, field):
    response = post(caller, deployment, body, content_type=content_type)
    assert response.status_code == status, response.content
    payload = response.json()
    assert payload["detail"] and field in payload["errors"], payload
    assert response["X-Request-ID"] == payload["request_id"] if status != 415 or "request_id" in payload else True
    assert post(caller, deployment, split(rows)).status_code == 200  # and the server keeps serving


def test_the_message_names_the_row_and_value(deployment, caller):
    body = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [[30, 1.0, 2], [31, "lots", 3]]}})
    detail = post(caller, deployment, body).json()["detail"]
    assert "income" in detail and "row 1" in detail and "lots" in detail


def test_a_million_rows_and_a_100_mb_body_answer_413(deployment, caller, rows):
    million = '{"dataframe_split": {"columns": ["age", "income", "tenure"], "data": [' + ",".join(
        ["[30,1.5,2]"] * 1_000_000) + "]}}"
    response = post(caller, deployment, million)
    assert response.status_code == 413 and "rows" in response.json()["errors"]
    huge = b" " * (100 * 1024 * 1024)
    response = post(caller, deployment, huge)
    assert response.status_code == 413 and "body" in response.json()["errors"]
    assert post(caller, deployment, split(rows)).status_code == 200


def test_who_may_call(people, project, other_project, deployment, api_as, rows):
    from apps.accounts.models import Membership

    anonymous = Client()
    assert post(anonymous, deployment, split(rows)).status_code == 401
    bad_key = Client(HTTP_AUTHORIZATION="Token pt_nonsense")
    assert post(bad_key, deployment, split(rows)).status_code == 401
    # A member's token scoped to another project, and an outsider: the deployment does not exist for them.
    Membership.objects.create(user=people["viewer"], project=other_project, role="viewer")
    scoped = api_as(people["viewer"], project=other_project)
    assert post(scoped, deployment, split(rows)).status_code == 404
    assert post(api_as(people["outsider"]), deployment, split(rows)).status_code == 404
    unknown = post(api_as(people["viewer"]), type("D", (), {"slug": "no-such-thing"})(), split(rows))
    assert unknown.status_code == 404
    assert post(api_as(people["viewer"], project=project), deployment, split(rows)).status_code == 200


def test_an_outsider_cannot_make_the_process_load_a_model(people, deployment, api_as, rows):
    serving.forget_all()
    serving._models.clear()
    assert post(api_as(people["outsider"]), deployment, split(rows)).status_code == 404
    assert not serving._models, "the model was loaded for someone who may not call it"
    assert post(api_as(people["viewer"]), deployment, split(rows)).status_code == 200
    assert serving._models


def test_a_champion_whose_artifact_is_missing_answers_503_and_the_process_stays_up(people, deployment, version,
                                                                                   api_as, rows):
    from apps.registry.models import ModelVersion

    serving.forget_all()
    serving._models.clear()
    ModelVersion.objects.filter(pk=version.pk).update(mlflow_model_uri="models:/portal.no-such-model/1")
    response = post(api_as(people["viewer"]), deployment, split(rows))
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert "could not be loaded" in response.json()["detail"]


def test_a_revoked_token_stops_at_once(people, deployment, rows, django_capture_on_commit_callbacks):
    token, key = account_services.create_token(actor=people["viewer"], name="app")
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert post(client, deployment, split(rows)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        account_services.revoke_token(token, actor=people["viewer"])
    response = post(client, deployment, split(rows))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_a_member_removed_from_the_project_cannot_call(people, deployment, api_as, rows):
    client = api_as(people["viewer"])
    assert post(client, deployment, split(rows)).status_code == 200
    from apps.accounts.models import Membership

    Membership.objects.filter(user=people["viewer"]).delete()
    assert post(client, deployment, split(rows)).status_code == 404


def test_deployment_tokens_reach_only_their_deployment(people, project, version, sandbox, deployment, rows):
    other = services.deploy(project, actor=people["scientist"], name="Other", environment=sandbox, version=version)
    token, key = services.create_token(deployment, actor=people["scientist"], name="call centre app")
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert post(client, deployment, split(rows)).status_code == 200
    assert post(client, other, split(rows)).status_code == 404
    assert client.get("/api/v1/deployments/").status_code == 401  # it is not an API token
    services.revoke_token(token, actor=people["scientist"])
    assert post(client, deployment, split(rows)).status_code == 401


def test_a_browser_session_needs_its_csrf_token(people, deployment, rows):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(people["viewer"])
    assert post(browser, deployment, split(rows)).status_code == 401
    browser.get("/")  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    response = browser.post(url(deployment), data=split(rows), content_type="application/json",
                            HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


def test_rate_limit_answers_429_with_retry_after(people, deployment, caller, rows):
    services.update(deployment, actor=people["scientist"], rate_limit_per_minute=3)
    statuses = [post(caller, deployment, split(rows)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = post(caller, deployment, split(rows))
    assert response.status_code == 429 and 1 <= int(response["Retry-After"]) <= 61
    assert "3 per minute" in response.json()["detail"]


def test_a_stopped_deployment_answers_503_and_resumes(people, deployment, caller, rows,
                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.set_status(deployment, actor=people["scientist"], active=False, reason="maintenance")
    assert post(caller, deployment, split(rows)).status_code == 503
    with django_capture_on_commit_callbacks(execute=True):
        services.set_status(deployment, actor=people["scientist"], active=True)
    assert post(caller, deployment, split(rows)).status_code == 200


def test_a_model_that_raises_answers_502_and_is_logged(people, project, sandbox, caller, rows, tmp_path):
    broken = custom_version(project, people["scientist"], RaisingModel, tmp_path, name="Broken")
    deployment = services.deploy(project, actor=people["scientist"], name="Broken", environment=sandbox,
                                 version=broken)
    response = post(caller, deployment, split(rows))
    assert response.status_code == 502
    assert "the model's own bug" in response.json()["detail"] and response.json()["request_id"]
    predlog.drain()
    assert PredictionLog.objects.get(request_id=response["X-Request-ID"]).status_code == 502


def test_a_model_that_hangs_is_cut_off_with_504_and_the_worker_survives(people, project, sandbox, caller, settings,
                                                                       tmp_path):
    settings.PORTAL_SERVING_TIMEOUT_SECONDS = 1
    slow = custom_version(project, people["scientist"], SlowModel, tmp_path, name="Slow")
    deployment = services.deploy(project, actor=people["scientist"], name="Slow", environment=sandbox, version=slow)
    hang = json.dumps({"dataframe_records": [{"age": 30, "income": 1.0, "tenure": 1}]})  # sleeps 3 s
    started = time.monotonic()
    response = post(caller, deployment, hang)
    assert response.status_code == 504 and time.monotonic() - started < 2.5
    quick = json.dumps({"dataframe_records": [{"age": 0, "income": 1.0, "tenure": 1}]})
    assert post(caller, deployment, quick).status_code == 200


def test_canary_share_of_100_sends_everything_to_the_challenger(people, deployment, version2, caller, rows):
    services.set_challenger(deployment, version2, actor=people["scientist"], mode="canary", share=100)
    response = post(caller, deployment, split(rows))
    assert response.status_code == 200 and response["X-Model-Version"].endswith("v2")
    assert response.json()["predictions"] == expected(version2, rows)
    predlog.drain()
    assert PredictionLog.objects.get(request_id=response["X-Request-ID"]).role == "canary"


def test_shadow_scores_every_request_off_the_response(people, deployment, version, version2, caller, rows):
    services.set_challenger(deployment, version2, actor=people["scientist"], mode="shadow")
    response = post(caller, deployment, split(rows))
    assert response["X-Model-Version"].endswith("v1")
    assert response.json()["predictions"] == expected(version, rows)
    deadline = time.monotonic() + 20
    while predlog.pending() < 2:  # the shadow's record is written off the response's path, a moment later
        assert time.monotonic() < deadline, "the shadow never logged"
        time.sleep(0.05)
    predlog.drain()
    logs = {log.role: log for log in PredictionLog.objects.filter(request_id=response["X-Request-ID"])}
    assert set(logs) == {"champion", "shadow"}
    assert logs["shadow"].model_version == version2 and logs["shadow"].outputs == expected(version2, rows)


def test_redis_buffer_and_write_through_when_redis_is_down(deployment, caller, rows, settings):
    import redis

    settings.REDIS_URL = "redis://127.0.0.1:6379/13"
    predlog._redis = None
    try:
        redis.Redis.from_url(settings.REDIS_URL).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    redis.Redis.from_url(settings.REDIS_URL).delete(predlog.REDIS_KEY)
    first = post(caller, deployment, split(rows))
    assert predlog.pending() == 1 and not PredictionLog.objects.exists()
    assert predlog.drain() == 1 and predlog.pending() == 0
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    predlog._redis = None
    second = post(caller, deployment, split(rows))
    assert second.status_code == 200
    assert PredictionLog.objects.filter(request_id__in=[first["X-Request-ID"], second["X-Request-ID"]]).count() == 2


def test_after_a_redis_failure_the_serving_path_leaves_redis_alone_for_a_while(deployment, caller, rows, settings):
    """Regression: a Redis that hangs cost every prediction its socket timeout, twice (log push and rate limit)."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.PORTAL_REDIS_RETRY_SECONDS = 60
    predlog._redis = None
    assert predlog.hot_redis() is not None
    answers = [post(caller, deployment, split(rows)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert predlog.hot_redis() is None  # the first failure parked it; the others did not try
    ids = [a["X-Request-ID"] for a in answers]
    assert PredictionLog.objects.filter(request_id__in=ids).count() == 3  # written through, none lost


@pytest.mark.django_db(transaction=True)
def test_spooled_records_from_many_threads_are_drained_exactly_once(deployment):
    def write(thread: int):
        for n in range(200):
            predlog.push(predlog.new_record(request_id=f"{thread}-{n}", deployment_id=deployment.pk, version_id=None,
                                            latency_ms=1.0, status=200))

    stop = threading.Event()
    drained = []

    def drainer():
        while not stop.is_set():
            drained.append(predlog.drain())

    writers = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    background = threading.Thread(target=drainer)
    background.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    background.join()
    drained.append(predlog.drain())
    assert sum(drained) == 800 == PredictionLog.objects.filter(deployment=deployment).count()


def test_old_models_are_released_from_the_process(people, deployment, version, version2, caller, rows,
                                                  django_capture_on_commit_callbacks, settings):
    settings.PORTAL_SERVING_CACHE_SECONDS = 0
    assert post(caller, deployment, split(rows)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        services.promote(deployment, version2, actor=people["scientist"])
    deadline = time.monotonic() + 20
    while not post(caller, deployment, split(rows))["X-Model-Version"].endswith("v2"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert set(serving._models) == {version.pk, version2.pk}  # v1 stays loaded: it is the fallback
    third = services.deploy(deployment.project, actor=people["scientist"], name="Other",
                            environment=deployment.environment, version=version2)
    with django_capture_on_commit_callbacks(execute=True):
        services.set_status(deployment, actor=people["scientist"], active=False)
    post(caller, deployment, split(rows))
    serving._release_unused_models()
    assert set(serving._models) == {version.pk, version2.pk}
    serving._routes.clear()
    serving._release_unused_models()
    assert serving._models == {} and third.champion == version2


def test_the_log_is_pruned_after_its_retention(deployment, settings):
    from datetime import timedelta

    from django.utils import timezone

    old = predlog.new_record(request_id="old", deployment_id=deployment.pk, version_id=None, latency_ms=1.0,
                             status=200)
    old["t"] = (timezone.now() - timedelta(days=40)).timestamp()
    new = predlog.new_record(request_id="new", deployment_id=deployment.pk, version_id=None, latency_ms=1.0,
                             status=200)
    predlog.insert([old, new])
    settings.PORTAL_PREDICTION_LOG_DAYS = 0
    assert predlog.prune() == 0  # 0 keeps everything
    settings.PORTAL_PREDICTION_LOG_DAYS = 30
    assert predlog.prune() == 1
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["new"]


def test_a_refused_request_is_logged_with_what_was_sent(deployment, caller):
    body = '{"dataframe_records": [{"age": "old", "income": 1.0, "tenure": 2}]}'
    response = post(caller, deployment, body)
    predlog.drain()
    log = PredictionLog.objects.get(request_id=response["X-Request-ID"])
    assert log.status_code == 400 and "age" in log.error
    assert log.inputs == {"columns": FEATURES, "data": [["old", 1.0, 2]]} and log.outputs is None


def test_a_champion_archived_while_serving_stops_answering(people, deployment, version, caller, rows, settings):
    from apps.registry.models import ModelVersion

    settings.PORTAL_SERVING_CACHE_SECONDS = 0
    assert post(caller, deployment, split(rows)).status_code == 200
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.ARCHIVED)
    response = post(caller, deployment, split(rows))
    assert response.status_code == 503 and "archived" in response.json()["detail"]
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.READY)
    assert post(caller, deployment, split(rows)).status_code == 200


def test_calling_the_endpoint_marks_the_api_token_used(people, deployment, rows):
    token, key = account_services.create_token(actor=people["viewer"], name="app")
    assert post(Client(HTTP_AUTHORIZATION=f"Token {key}"), deployment, split(rows)).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_serving_only_process_answers_predictions_and_nothing_else(people, deployment, version, caller, rows,
                                                                    settings, api_as):
    """PORTAL_SERVICE=serving (docker-compose's `serving` service): the same endpoint, no pages, no other API."""
    settings.ROOT_URLCONF = "portal.urls_serving"
    answer = post(caller, deployment, split(rows))
    assert answer.status_code == 200
    assert answer.json()["predictions"] == expected(version, rows)
    assert caller.get("/healthz").status_code == 200
    for path in ("/", "/models/", "/api/v1/projects/", "/api/v1/deployments/", "/admin/", "/accounts/login/"):
        refused = caller.get(path)
        assert refused.status_code == 404, path
        assert "invocations" in refused.json()["detail"]
    # Who may call is checked exactly as on the web processes.
    assert post(Client(), deployment, split(rows)).status_code == 401
    assert post(api_as(people["outsider"]), deployment, split(rows)).status_code == 404


def test_portal_service_must_be_web_or_serving():
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings",
                                 "PORTAL_SERVICE": "predict"}, timeout=120)
    assert result.returncode != 0
    assert "PORTAL_SERVICE must be web or serving, not 'predict'" in result.stderr
