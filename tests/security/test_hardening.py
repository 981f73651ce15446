"""Deployment hardening: production settings pass `check --deploy`, every kind of response carries the security
headers a review expects, cookies are flagged, and idle browser sessions end (API tokens do not).

Production settings are exercised in a subprocess (settings are read once per process, and the test run itself
uses DEBUG=1); the headers of the running configuration are checked in-process on each kind of response.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client

from apps.accounts.middleware import LAST_SEEN_KEY
from apps.audit.models import AuditEvent

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_PROBE = r"""
import json
import django
django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import override_settings

# The manifest storage needs `collectstatic` (slow: plotly.js); the headers do not depend on it.
override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}).enable()
client = Client(HTTP_HOST="portal.example")
result = {"settings": {name: getattr(settings, name) for name in (
    "DEBUG", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_HTTPONLY", "CSRF_COOKIE_SAMESITE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", "PORTAL_SESSION_IDLE_MINUTES")}}
for path in ("/accounts/login/", "/healthz"):
    response = client.get(path, secure=True)
    result[path] = {"status": response.status_code, "headers": dict(response.headers),
                    "cookies": {name: {"secure": bool(morsel["secure"]), "httponly": bool(morsel["httponly"]),
                                       "samesite": morsel["samesite"]} for name, morsel in response.cookies.items()}}
print("PROBE" + json.dumps(result, default=str))
"""


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PORTAL_", "SECURE_", "SESSION_", "CSRF_", "OIDC_"))
           and name not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "portal.example",
        "CSRF_TRUSTED_ORIGINS": "https://portal.example",
        "PORTAL_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
    })
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


# --- Production settings ----------------------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def production_probe(tmp_path_factory) -> dict:
    result = run(["-c", PRODUCTION_PROBE], production_env(tmp_path_factory.mktemp("prod")))
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.split("PROBE", 1)[1])


def test_production_settings_flag_cookies_and_require_https(production_probe):
    values = production_probe["settings"]
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SECURE_SSL_REDIRECT"]
    assert values["SESSION_COOKIE_HTTPONLY"] and values["CSRF_COOKIE_HTTPONLY"]
    assert values["SESSION_COOKIE_SAMESITE"] == values["CSRF_COOKIE_SAMESITE"] == "Lax"
    assert values["SECURE_HSTS_SECONDS"] >= 31536000 and values["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert values["PORTAL_SESSION_IDLE_MINUTES"] == 30


@pytest.mark.parametrize("path", ["/accounts/login/", "/healthz"])
def test_production_responses_carry_hsts_and_security_headers(production_probe, path):
    response = production_probe[path]
    assert response["status"] in (200, 503), response  # /healthz: the probe's database is empty, still answers
    assert_security_headers(response["headers"])
    assert response["headers"]["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "includeSubDomains" in response["headers"]["Strict-Transport-Security"]


def test_production_login_page_sets_a_secure_httponly_samesite_csrf_cookie(production_probe):
    cookie = production_probe["/accounts/login/"]["cookies"]["csrftoken"]
    assert cookie == {"secure": True, "httponly": True, "samesite": "Lax"}


@pytest.mark.parametrize("value, message", [
    ("-1", "PORTAL_SESSION_IDLE_MINUTES must be 0 (off) or a positive number"),
    ("half an hour", "PORTAL_SESSION_IDLE_MINUTES must be an integer"),
])
def test_bad_idle_timeout_is_refused_at_startup(tmp_path, value, message):
    result = run(["manage.py", "check"], production_env(tmp_path, PORTAL_SESSION_IDLE_MINUTES=value))
    assert result.returncode != 0
    assert message in result.stderr


# --- Headers on every kind of response (the test configuration) ----------------------------------------


def assert_security_headers(headers) -> None:
    csp = headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"], "scripts only from our origin: no inline, no eval"
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'self'"] and directives["form-action"] == ["'self'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = headers["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"):
        assert feature in policy


@pytest.mark.django_db
def test_security_headers_on_a_page_an_api_response_serving_and_healthz(people, client_as, api_as):
    responses = {
        "page": client_as(people["viewer"]).get("/"),
        "login page": Client().get("/accounts/login/"),
        "api": api_as(people["viewer"]).get("/api/v1/projects/"),
        "api error": Client().get("/api/v1/projects/"),
        "invocations": Client().post("/api/v1/deployments/no-such-thing/invocations", data="{}",
                                     content_type="application/json"),
        "healthz": Client().get("/healthz"),
    }
    assert responses["page"].status_code == 200
    assert responses["api"].status_code == 200
    assert responses["api error"].status_code in (401, 403)
    assert responses["invocations"].status_code in (401, 403, 404)
    assert responses["healthz"].status_code == 200
    for name, response in responses.items():
        try:
            assert_security_headers(response.headers)
        except (AssertionError, KeyError) as error:
            raise AssertionError(f"{name}: {error!r}; headers {dict(response.headers)}") from None


@pytest.mark.django_db
def test_session_cookie_is_httponly_samesite_and_secure_when_configured(people, settings):
    settings.SESSION_COOKIE_SECURE = True
    response = Client().post("/accounts/login/", {"username": "viewer", "password": "correct-horse-battery-staple"},
                             secure=True)
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"


# --- Session idle timeout -------------------------------------------------------------------------------


def _idle(client: Client, minutes: float) -> None:
    session = client.session
    session[LAST_SEEN_KEY] = time.time() - minutes * 60
    session.save()


@pytest.mark.django_db
def test_idle_session_is_signed_out_told_why_and_audited(people, client_as, settings):
    settings.PORTAL_SESSION_IDLE_MINUTES = 30
    client = client_as(people["viewer"])
    client.get("/")
    _idle(client, 31)

    response = client.get("/models/?q=x")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=%2Fmodels%2F%3Fq%3Dx"
    login_page = client.get(response["Location"])
    assert "You were signed out because you had not used the portal for 30 minutes" in login_page.content.decode()
    assert client.get("/").status_code == 302, "still signed out"
    event = AuditEvent.objects.filter(action="auth.logout").latest("sequence")
    assert event.actor == people["viewer"]
    assert event.details["reason"] == "idle" and event.details["limit_minutes"] == 30
    assert AuditEvent.objects.filter(action="auth.logout").count() == 1, "one sign-out event, not two"


@pytest.mark.django_db
def test_active_session_stays_signed_in_and_its_clock_restarts(people, client_as, settings):
    settings.PORTAL_SESSION_IDLE_MINUTES = 30
    client = client_as(people["viewer"])
    _idle(client, 29)
    assert client.get("/").status_code == 200
    assert time.time() - client.session[LAST_SEEN_KEY] < 5
    assert not AuditEvent.objects.filter(action="auth.logout").exists()


@pytest.mark.django_db
def test_zero_turns_the_idle_timeout_off(people, client_as, settings):
    settings.PORTAL_SESSION_IDLE_MINUTES = 0
    client = client_as(people["viewer"])
    _idle(client, 60 * 24)
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_idle_htmx_request_reloads_the_login_page(people, client_as, settings):
    settings.PORTAL_SESSION_IDLE_MINUTES = 30
    client = client_as(people["viewer"])
    _idle(client, 31)
    response = client.get("/", HTTP_HX_REQUEST="true")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_idle_session_on_the_api_gets_an_api_answer_not_a_redirect(people, client_as, settings):
    settings.PORTAL_SESSION_IDLE_MINUTES = 30
    client = client_as(people["viewer"])
    _idle(client, 31)
    response = client.get("/api/v1/projects/")
    assert response.status_code in (401, 403)
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_api_tokens_are_not_subject_to_the_idle_timeout(people, api_as, settings):
    settings.PORTAL_SESSION_IDLE_MINUTES = 1
    api = api_as(people["viewer"])
    assert api.get("/api/v1/projects/").status_code == 200
    assert "sessionid" not in api.cookies, "a token request opens no session, so no idle clock runs"
    # Even a client that also holds an idle browser session keeps working with its token.
    api.force_login(people["viewer"])
    _idle(api, 90)
    assert api.get("/api/v1/projects/").status_code == 200


# --- docs/security.md ------------------------------------------------------------------------------------


def test_every_test_the_security_document_points_to_exists():
    text = (ROOT / "docs/security.md").read_text(encoding="utf-8")
    pointers = set(re.findall(r"`(tests/[\w/.]+)`", text))
    assert len(pointers) > 20
    missing = sorted(p for p in pointers if not (ROOT / p).exists())
    assert not missing, f"docs/security.md points to tests that do not exist: {missing}"
