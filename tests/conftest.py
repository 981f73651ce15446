"""Personas shared by every test: one project, a member per role, a staff user and an outsider."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts import services as account_services
from apps.accounts.models import Membership, Project, User

PASSWORD = "correct-horse-battery-staple"
ROLES = ["viewer", "scientist", "approver", "admin"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Real hashing costs ~0.3 s a user; the tests are about access, not about PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _own_audit_checkpoints(settings, tmp_path):
    # Checkpoints name a chain head that must still exist; a test database starts a new chain every test.
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "audit-checkpoints.jsonl")


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Lockout counters and throttles live in the cache; no test may inherit another's.
    cache.clear()
    yield
    cache.clear()


def make_user(username: str, *, staff: bool = False, **extra) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.org", password=PASSWORD,
                                    is_staff=staff, **extra)
    return user


@pytest.fixture
def project(db) -> Project:
    return Project.objects.create(slug="alpha", name="Alpha")


@pytest.fixture
def other_project(db) -> Project:
    return Project.objects.create(slug="beta", name="Beta")


@pytest.fixture
def people(project, other_project) -> dict[str, User]:
    """admin / approver / scientist / viewer of `project`; `outsider` admins `other_project`; `staff`."""
    people = {}
    for role in ROLES:
        people[role] = make_user(role)
        Membership.objects.create(user=people[role], project=project, role=role)
    people["outsider"] = make_user("outsider")
    Membership.objects.create(user=people["outsider"], project=other_project, role="admin")
    people["staff"] = make_user("staffer", staff=True)
    return people


@pytest.fixture
def client_as():
    """A browser-like client signed in as the given user (session auth, CSRF enforced)."""

    def _client(user) -> Client:
        client = Client(enforce_csrf_checks=False)
        client.force_login(user)
        return client

    return _client


@pytest.fixture
def api_as():
    """An API client authenticating with a real token of the given user (optionally project-scoped)."""

    def _api(user, *, project=None) -> APIClient:
        _, key = account_services.create_token(actor=user, name="test", project=project)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return _api


# --- A real Celery worker (integration and browser tests) -------------------------------------------


@pytest.fixture
def jobs_stay_in_process(monkeypatch):
    """For tests whose data is committed (live server, a real worker): the fixtures profile and import in this
    process, so a Celery worker left running by an earlier test must not be handed those jobs too (two imports
    of one version race, and the second changes its artifact digest under an approval)."""
    from apps.datasets.tasks import profile_version_task
    from apps.registry.tasks import import_version_task

    monkeypatch.setattr(profile_version_task, "delay", lambda *args, **kwargs: None)
    monkeypatch.setattr(import_version_task, "delay", lambda *args, **kwargs: None)


ROOT = Path(__file__).resolve().parents[1]


# The MLflow settings this test session started with, before any test changed them.
_MLFLOW_ENVIRONMENT = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


def _database_url() -> str:
    """The URL of the database the tests are using right now (pytest-django's test database)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    if connection.vendor == "postgresql":
        auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
        return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    raise RuntimeError(f"no worker URL for {connection.vendor}")


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """Start `celery -A portal worker` as a subprocess; stop it at the end of the session."""
    with django_db_blocker.unblock():
        url = _database_url()
    if connection.vendor == "sqlite" and ":memory:" in url or "mode=memory" in url:
        pytest.fail("The SQLite test database must be a file so a worker process can share it.")
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI to the environment, so tests that pointed MLflow
    # at a store of their own (or a test server long gone) would hand it on: the worker gets the session's.
    for name, value in _MLFLOW_ENVIRONMENT.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = log_path.open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--loglevel=INFO", "--concurrency=1",
         "--pool=solo", "--without-heartbeat", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while "ready." not in log_path.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"The Celery worker did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    yield log_path
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
    log.close()


# --- Single sign-on: a real OpenID Connect provider on loopback (oidc-provider-mock) ---------------------------


@pytest.fixture(scope="module")
def oidc_provider():
    """A real OIDC provider for the whole module; its users are set per test with PUT /users/<sub>."""
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def sso_on(settings, oidc_provider):
    """The portal configured for that provider ("Agency ID"); yields the provider's address."""
    from apps.accounts import sso

    settings.OIDC_ISSUER = oidc_provider
    settings.OIDC_RP_CLIENT_ID = "portal"
    settings.OIDC_RP_CLIENT_SECRET = "portal-secret"
    settings.OIDC_PROVIDER_NAME = "Agency ID"
    sso.forget_provider_config()
    yield oidc_provider
    sso.forget_provider_config()
