"""Serving and database faults, caused for real: Redis stopped and frozen mid-traffic, the database unreachable or
cut mid-transaction, and models that hang or eat memory, in-process and under gunicorn."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import requests
from django.db import connection
from django.test import Client

from apps.accounts import services as account_services
from apps.audit.models import AuditEvent
from apps.deployments import predlog, services, serving
from apps.deployments.models import Deployment, PredictionLog
from tests.deployments.conftest import _fresh_serving, sandbox, training, version  # noqa: F401  (fixtures)
from tests.faults.brokers import RedisServer
from tests.faults.serving_fixtures import (
    GreedyModel,
    HangingModel,
    HangsOnAgeModel,
    HugeOnAgeModel,
    pyfunc_version,
)
from tests.registry.conftest import FEATURES, training_frame

pytestmark = pytest.mark.django_db(transaction=True)

BODY = json.dumps({"dataframe_split": json.loads(training_frame(rows=3, seed=7)[FEATURES].to_json(
    orient="split", index=False))})


@pytest.fixture(autouse=True)
def _no_model_loading_left(transactional_db):
    """A request may leave serving loading a route in a background thread (serving._load_in_background) that still
    queries the database when the test ends; emptying the tables under it deadlocked on PostgreSQL. Wait for it
    (this fixture depends on the database, so its teardown runs before the tables are emptied)."""
    yield
    for thread in threading.enumerate():
        if thread.name.startswith("load-") and thread is not threading.current_thread():
            thread.join(timeout=60)


def invocations(deployment) -> str:
    return f"/api/v1/deployments/{deployment.slug}/invocations"


def token_for(user) -> dict:
    _, key = account_services.create_token(actor=user, name="fault client")
    return {"Authorization": f"Token {key}"}


@pytest.fixture
def deployment(people, project, version, sandbox):  # noqa: F811
    return services.deploy(project, actor=people["scientist"], name="Churn scoring", environment=sandbox,
                           version=version)


# --- Redis stopped while predictions are served -------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path, settings):
    """A redis-server of our own as the prediction-log buffer, the rate limiter and the Django cache."""
    server = RedisServer(tmp_path / "redis", persistent=True)  # as docker-compose runs it
    server.start()
    own_caches = settings.CACHES
    settings.REDIS_URL = server.url()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": server.url(),
                                   "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}}}
    settings.PORTAL_REDIS_RETRY_SECONDS = 1
    predlog._redis = None
    yield server
    settings.CACHES = own_caches  # before the suite's own cache clean-up runs against it
    server.kill()
    predlog._redis = None


def test_redis_stopped_and_frozen_mid_traffic_loses_no_prediction_and_logs_each_once(
        live_server, deployment, people, redis_server):
    headers = {**token_for(people["viewer"]), "Content-Type": "application/json"}
    endpoint = live_server.url + invocations(deployment)
    sent: list[tuple[int, str, float]] = []
    stop = threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                response = session.post(endpoint, data=BODY, headers=headers, timeout=30)
                sent.append((response.status_code, response.headers.get("X-Request-ID", ""),
                             time.monotonic() - started))

    def beat():  # what the drain task does every few seconds under Celery beat
        from django.db import close_old_connections

        while not stop.is_set():
            try:
                predlog.drain()
            except Exception:  # noqa: S112 - a failed beat run is retried at the next tick, as under Celery
                continue
            finally:
                close_old_connections()
            time.sleep(0.2)

    # Warm, as gunicorn's post_worker_init makes every worker: loading a model looks its files up in the cache.
    warm = requests.post(endpoint, data=BODY, headers=headers, timeout=60)
    sent.append((warm.status_code, warm.headers["X-Request-ID"], 0.0))
    threads = [threading.Thread(target=client) for _ in range(3)] + [threading.Thread(target=beat)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        redis_server.freeze()  # hangs: every call waits for its timeout
        time.sleep(2.0)
        redis_server.thaw()
        time.sleep(1.0)
        redis_server.stop()  # gone: connections refused
        in_outage, rows = len(sent), PredictionLog.objects.count()
        time.sleep(2.0)
        assert len(sent) > in_outage, "no request was answered while Redis was stopped"
        assert PredictionLog.objects.count() > rows, "nothing was written through to the database"
        redis_server.start()  # back, with its append-only file
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    statuses = Counter(status for status, _, _ in sent)
    assert statuses == {200: len(sent)}, statuses
    # A hung Redis costs one request its timeout, not every request: the serving path leaves it alone for a while.
    assert sorted(seconds for *_, seconds in sent)[len(sent) // 2] < 0.5

    deadline = time.monotonic() + 30  # a drainer cut off mid-drain holds its lock until it expires (15 s)
    while predlog.pending():
        assert time.monotonic() < deadline, f"{predlog.pending()} records stuck in the buffer"
        predlog.drain()
        time.sleep(0.2)
    logged = Counter(PredictionLog.objects.filter(deployment=deployment).values_list("request_id", flat=True))
    assert len(sent) > 20
    assert set(logged) == {request_id for _, request_id, _ in sent}  # none lost
    assert max(logged.values()) == 1  # none twice (a timed-out RPUSH that Redis ran after all is deduplicated)


def test_a_cold_process_with_redis_down_still_serves(deployment, people, redis_server):
    """A process that loads the model while Redis (the cache) is down asks the registry where its files are
    (registry.mlflow_store.artifact_location treats a cache that is down as a miss): it answers, not a 503."""
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=token_for(people["viewer"])["Authorization"])
    assert client.post(invocations(deployment), BODY, content_type="application/json").status_code == 200
    redis_server.stop()
    warm = client.post(invocations(deployment), BODY, content_type="application/json")
    assert warm.status_code == 200  # the cached route and model need no Redis; the rate limit counts locally
    serving.forget_all()
    from apps.registry.evidence import clear_cache

    clear_cache()
    cold = client.post(invocations(deployment), BODY, content_type="application/json")
    assert cold.status_code == 200, cold.content
    predlog.drain()
    assert PredictionLog.objects.filter(request_id=warm["X-Request-ID"]).exists()  # written through


# --- The database unavailable ------------------------------------------------------------------------------------


class DatabaseDown:
    """Points Django's connection at a database that is not there: a closed port (PostgreSQL) or a file in a
    directory that does not exist (SQLite). Every query then fails the way an outage makes it fail."""

    def __init__(self, tmp_path):
        self.saved = dict(connection.settings_dict)
        self.tmp_path = tmp_path

    def __enter__(self):
        from tests.faults.brokers import free_port

        connection.close()
        if connection.vendor == "sqlite":
            connection.settings_dict["NAME"] = str(self.tmp_path / "no-such-directory" / "portal.sqlite3")
        else:
            connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(free_port())
        return self

    def __exit__(self, *exc):
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(self.saved)


def test_database_down_answers_503_with_retry_after_everywhere(deployment, people, client_as, tmp_path, settings):
    settings.PORTAL_SERVING_CACHE_SECONDS = 60  # the warm request below must not depend on the machine's speed
    token = token_for(people["viewer"])["Authorization"]
    api = Client(raise_request_exception=False, HTTP_AUTHORIZATION=token)
    scientist = Client(raise_request_exception=False,
                       HTTP_AUTHORIZATION=token_for(people["scientist"])["Authorization"])
    browser = client_as(people["viewer"])
    browser.raise_request_exception = False
    assert browser.get("/").status_code == 200
    warm = api.post(invocations(deployment), BODY, content_type="application/json")
    assert warm.status_code == 200
    deployments_before = Deployment.objects.count()
    with DatabaseDown(tmp_path):
        # Served from this process's cache: the database is not on the prediction path, the log is buffered.
        served = api.post(invocations(deployment), BODY, content_type="application/json")
        assert served.status_code == 200
        cold = Client(raise_request_exception=False, HTTP_AUTHORIZATION=token)
        serving.forget_all()  # a process that has not served this deployment yet
        answers = {
            "invocations": cold.post(invocations(deployment), BODY, content_type="application/json"),
            "api read": api.get("/api/v1/deployments/"),
            "api write": scientist.post("/api/v1/deployments/", {
                "project": deployment.project.slug, "environment": deployment.environment.slug,
                "model_version": str(deployment.champion.uuid), "name": "During the outage"},
                content_type="application/json"),
            "page": browser.get("/"),
        }
    for name, answer in answers.items():
        assert answer.status_code == 503, (name, answer.status_code, answer.content[:300])
        assert int(answer["Retry-After"]) > 0, name
        if name in ("invocations", "api read", "api write"):
            assert answer["Content-Type"] == "application/json", name
            assert "database" in answer.json()["detail"], name
        else:
            assert answer["Content-Type"].startswith("text/html"), name
            assert b"temporarily unavailable" in answer.content, name
    assert Deployment.objects.count() == deployments_before  # nothing half-written
    assert browser.get("/").status_code == 200  # and back once it returns
    predlog.drain()
    assert PredictionLog.objects.filter(request_id=served["X-Request-ID"]).exists()  # the outage's prediction too


def test_database_cut_mid_transaction_leaves_no_partial_rows(deployment, people, version, tmp_path):  # noqa: F811
    """The connection dies between the deployment's row and its history row: PostgreSQL rolls back, the client gets
    503, and neither row nor audit event exists."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server to cut the connection to (SQLite is a file in this process)")
    from tests.faults.serving_fixtures import CuttingProxy

    saved = dict(connection.settings_dict)
    proxy = CuttingProxy(saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 5432))
    scientist = Client(raise_request_exception=False,
                       HTTP_AUTHORIZATION=token_for(people["scientist"])["Authorization"])
    audit_before = AuditEvent.objects.count()
    try:
        connection.close()
        connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(proxy.port)
        proxy.cut_on(b'INSERT INTO "deployments_deploymentevent"')
        answer = scientist.post("/api/v1/deployments/", {
            "project": deployment.project.slug, "environment": deployment.environment.slug,
            "model_version": str(version.uuid), "name": "Cut short"}, content_type="application/json")
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        proxy.close()
    assert proxy.cuts == 1
    assert answer.status_code == 503 and int(answer["Retry-After"]) > 0, answer.content
    assert not Deployment.objects.filter(name="Cut short").exists()
    assert AuditEvent.objects.count() == audit_before


# --- Models that hang or exhaust memory ----------------------------------------------------------------------------


@pytest.fixture
def quick_check(settings):
    settings.PORTAL_DEPLOY_CHECK_SECONDS = 10  # loading alone takes seconds on a busy two-core machine
    settings.PORTAL_DEPLOY_CHECK_MEMORY_MB = 512


@pytest.mark.parametrize("misbehaving", [HangingModel, GreedyModel], ids=["hangs", "exhausts memory"])
def test_a_new_version_that_hangs_or_exhausts_memory_is_refused_and_the_previous_keeps_serving(
        misbehaving, people, project, sandbox, tmp_path, settings, quick_check):  # noqa: F811
    good = pyfunc_version(project, people["scientist"], HangsOnAgeModel, tmp_path, name="Scorer")
    settings.PORTAL_DEPLOY_CHECK = False  # v1's own check is not what this test is about (it passes: a few seconds)
    deployment = services.deploy(project, actor=people["scientist"], name="Scorer", environment=sandbox, version=good)
    settings.PORTAL_DEPLOY_CHECK = True
    bad = pyfunc_version(project, people["scientist"], misbehaving, tmp_path, name="Scorer", registered=good.model)
    api = Client(raise_request_exception=False, HTTP_AUTHORIZATION=token_for(people["scientist"])["Authorization"])
    assert api.post(invocations(deployment), BODY, content_type="application/json")["X-Model-Version"] == "scorer v1"

    started = time.monotonic()
    answer = api.patch(f"/api/v1/deployments/{deployment.slug}/", {"model_version": str(bad.uuid)},
                       content_type="application/json")
    assert answer.status_code == 409, answer.content
    detail = answer.json()["errors"]["model_version"][0]
    assert "Scorer v2" in detail and "current version keeps serving" in detail
    assert ("within 10 s" if misbehaving is HangingModel else "out of memory") in detail
    assert time.monotonic() - started < 90
    deployment.refresh_from_db()
    assert deployment.champion == good and deployment.generation == 1
    served = api.post(invocations(deployment), BODY, content_type="application/json")
    assert served.status_code == 200 and served["X-Model-Version"] == "scorer v1"


def test_models_that_only_run_library_code_skip_the_check(version):  # noqa: F811
    assert serving.smoke_refusal(version) == ""  # a skops tree: data read by scikit-learn, no child process
    assert serving.runs_own_code({"python_function": {"loader_module": "mlflow.pyfunc.model"}})
    assert serving.runs_own_code({"python_function": {"loader_module": "mlflow.sklearn"},
                                  "sklearn": {"serialization_format": "cloudpickle"}})


def test_under_gunicorn_a_hanging_or_exploding_request_is_cut_off_and_everything_else_keeps_serving(
        deployment, people, project, sandbox, tmp_path, settings):  # noqa: F811
    """A real gunicorn (the repository's gunicorn.conf.py): requests that make a model hang get 504 after the serving
    timeout and one that makes it ask for a terabyte gets 502, each with a JSON body, while another deployment goes
    on answering at once, and the worker process is the same one at the end."""
    from tests.conftest import _MLFLOW_ENVIRONMENT, _database_url
    from tests.faults.brokers import free_port
    from tests.faults.serving_fixtures import start_gunicorn, stop_process_group, wait_for_port, worker_pids

    settings.PORTAL_DEPLOY_CHECK = False  # both answer a typical row; it is real requests that reach their bugs
    sticky = services.deploy(project, actor=people["scientist"], name="Sticky", environment=sandbox,
                             version=pyfunc_version(project, people["scientist"], HangsOnAgeModel, tmp_path,
                                                    name="Sticky"))
    hungry = services.deploy(project, actor=people["scientist"], name="Hungry", environment=sandbox,
                             version=pyfunc_version(project, people["scientist"], HugeOnAgeModel, tmp_path,
                                                    name="Hungry"))
    headers = {**token_for(people["viewer"]), "Content-Type": "application/json"}
    port = free_port()
    env = {"DATABASE_URL": _database_url(), "PORTAL_SERVING_TIMEOUT_SECONDS": "2", "WEB_CONCURRENCY": "1",
           "WEB_THREADS": "4", "PYTHONUNBUFFERED": "1",
           **{name: value for name, value in _MLFLOW_ENVIRONMENT.items() if value is not None}}
    server = start_gunicorn(port, env, tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"

    def post(target, age: int):
        body = json.dumps({"dataframe_records": [{"age": age, "income": 1.0, "tenure": 1}]})
        return requests.post(base + invocations(target), data=body, headers=headers, timeout=60)

    try:
        wait_for_port(port, seconds=90, process=server)
        for target in (deployment, sticky, hungry):
            assert post(target, 30).status_code == 200
        workers = worker_pids(server.pid)
        assert len(workers) == 1

        hung: list[requests.Response] = []
        hangers = [threading.Thread(target=lambda: hung.append(post(sticky, 99))) for _ in range(3)]
        for thread in hangers:
            thread.start()
        time.sleep(0.3)
        beside = []
        for _ in range(5):  # the other deployment while three requests hang beside it
            started = time.monotonic()
            beside.append((post(deployment, 30).status_code, time.monotonic() - started))
        for thread in hangers:
            thread.join(timeout=30)
        assert [r.status_code for r in hung] == [504] * 3
        assert all("did not answer within 2 s" in r.json()["detail"] for r in hung)
        assert all(status == 200 and seconds < 1.5 for status, seconds in beside), beside

        exploded = post(hungry, 98)
        assert exploded.status_code == 502 and "MemoryError" in exploded.json()["detail"]

        for target in (deployment, sticky, hungry):  # all three still serve, from the same worker process
            assert post(target, 30).status_code == 200
        assert worker_pids(server.pid) == workers and server.poll() is None
    finally:
        stop_process_group(server)
