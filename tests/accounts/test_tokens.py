"""API tokens: shown once, stored hashed, scoped, expiring, revocable, audited; and the password-for-token login."""

from __future__ import annotations

import hashlib
import html
import json
import re
from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, Membership, User
from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD

TOKENS_PAGE = "/account/tokens/"
TOKEN_LOGIN = "/api/v1/auth/token/"


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def key_on_page(response) -> str | None:
    match = re.search(r'id="new-key" value="([^"]+)"', response.content.decode())
    return html.unescape(match.group(1)) if match else None


def assert_key_not_stored(key: str) -> None:
    """Only the key's sha256 is kept: no column of any token row, nor any audit event, holds the key."""
    token = ApiToken.objects.get(key_hash=hashlib.sha256(key.encode()).hexdigest())
    row = {field.attname: getattr(token, field.attname) for field in ApiToken._meta.concrete_fields}
    assert not [name for name, value in row.items() if key in str(value)]
    for event in AuditEvent.objects.all():
        assert key not in json.dumps(model_to_dict(event), default=str)


def last_event(action: str) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action).order_by("-sequence").first()
    assert event is not None, f"no {action} audit event was written"
    return event


# --- Created in the UI ----------------------------------------------------------------------------------


def test_a_token_created_in_the_ui_is_shown_once_and_stored_hashed(people, project, client_as):
    browser = client_as(people["scientist"])
    tomorrow = (timezone.now() + timedelta(days=2)).date()

    created = browser.post(TOKENS_PAGE, {"name": "nightly scoring", "project": "alpha",
                                         "expires_at": tomorrow.isoformat()})

    assert created.status_code == 200
    key = key_on_page(created)
    assert key and key.startswith("pt_")
    assert "Copy it now: it will not be shown again." in html.unescape(created.content.decode())
    token = ApiToken.objects.get(user=people["scientist"], name="nightly scoring")
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert token.project == project
    assert token.expires_at.date() == tomorrow
    assert_key_not_stored(key)

    reloaded = browser.get(TOKENS_PAGE)
    assert key not in reloaded.content.decode()
    assert key_on_page(reloaded) is None
    assert token.key_hint in reloaded.content.decode(), "the list shows the key's start, to recognise it"

    assert bearer(key).get("/api/v1/projects/alpha/").status_code == 200


def test_creating_a_token_in_the_ui_is_audited(people, project, client_as):
    client_as(people["scientist"]).post(TOKENS_PAGE, {"name": "ci", "project": "alpha"})
    event = last_event("token.create")
    assert (event.actor, event.project) == (people["scientist"], project)
    assert event.details["name"] == "ci"


@pytest.mark.parametrize("days", [-30, 0], ids=["past", "today"])
def test_an_expiry_date_that_is_not_in_the_future_is_a_form_error(days, people, client_as):
    day = (timezone.now() + timedelta(days=days)).date()
    response = client_as(people["scientist"]).post(TOKENS_PAGE, {"name": "old", "expires_at": day.isoformat()})

    assert response.status_code == 200
    assert response.context["form"].errors["expires_at"] == ["Choose a date after today."]
    assert "Choose a date after today." in response.content.decode()
    assert key_on_page(response) is None
    assert not ApiToken.objects.filter(name="old").exists()


def test_the_ui_only_offers_projects_the_user_belongs_to(people, other_project, client_as):
    response = client_as(people["scientist"]).post(TOKENS_PAGE, {"name": "sneaky", "project": "beta"})
    assert "project" in response.context["form"].errors
    assert not ApiToken.objects.filter(name="sneaky").exists()


def test_revoking_in_the_ui_asks_first_then_stops_the_key_and_is_audited(people, client_as):
    browser = client_as(people["scientist"])
    key = key_on_page(browser.post(TOKENS_PAGE, {"name": "to revoke"}))
    token = ApiToken.objects.get(name="to revoke")

    confirm = browser.get(f"/account/tokens/{token.id}/revoke/")
    assert confirm.status_code == 200
    assert "Revoke the token “to revoke”?" in html.unescape(confirm.content.decode())
    assert bearer(key).get("/api/v1/projects/").status_code == 200, "the confirmation page revokes nothing"

    browser.post(f"/account/tokens/{token.id}/revoke/")

    token.refresh_from_db()
    assert token.status == "revoked"
    refused = bearer(key).get("/api/v1/projects/")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    event = last_event("token.revoke")
    assert event.actor == people["scientist"]
    assert event.details["name"] == "to revoke"


def test_nobody_can_revoke_someone_elses_token(people, client_as, api_as):
    key = key_on_page(client_as(people["scientist"]).post(TOKENS_PAGE, {"name": "mine"}))
    token = ApiToken.objects.get(name="mine")

    assert client_as(people["admin"]).post(f"/account/tokens/{token.id}/revoke/").status_code == 404
    assert api_as(people["admin"]).delete(f"/api/v1/tokens/{token.id}/").status_code == 404
    assert bearer(key).get("/api/v1/projects/").status_code == 200
    assert not AuditEvent.objects.filter(action="token.revoke").exists()


# --- Created and revoked through the API ----------------------------------------------------------------


def test_an_api_created_token_returns_its_key_once(people, api_as):
    api = api_as(people["viewer"])
    created = api.post("/api/v1/tokens/", {"name": "notebook"}, format="json")

    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("pt_")
    assert_key_not_stored(key)
    assert "key" not in api.get(f"/api/v1/tokens/{created.json()['id']}/").json()
    assert all("key" not in t for t in api.get("/api/v1/tokens/").json()["results"])
    assert bearer(key).get("/api/v1/projects/").status_code == 200
    assert last_event("token.create").actor == people["viewer"]


def test_revoking_through_the_api_stops_the_key_and_is_audited(people, api_as):
    api = api_as(people["viewer"])
    created = api.post("/api/v1/tokens/", {"name": "short-lived"}, format="json").json()

    assert api.delete(f"/api/v1/tokens/{created['id']}/").status_code == 204

    assert bearer(created["key"]).get("/api/v1/projects/").status_code == 401
    assert api.get(f"/api/v1/tokens/{created['id']}/").json()["status"] == "revoked"
    assert last_event("token.revoke").actor == people["viewer"]


def test_an_api_token_cannot_expire_in_the_past(people, api_as):
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    response = api_as(people["viewer"]).post("/api/v1/tokens/", {"name": "x", "expires_at": past}, format="json")
    assert response.status_code == 400
    assert "future" in response.json()["errors"]["expires_at"][0]


def test_a_token_cannot_be_scoped_to_a_project_the_user_is_not_in(people, other_project, api_as):
    response = api_as(people["viewer"]).post("/api/v1/tokens/", {"name": "x", "project": "beta"}, format="json")
    assert response.status_code == 400
    assert "not a member" in response.json()["errors"]["project"][0]
    assert not ApiToken.objects.filter(name="x").exists()


def test_a_project_scoped_token_only_sees_its_project(people, project, other_project, client_as):
    Membership.objects.create(user=people["scientist"], project=other_project, role="scientist")
    browser = client_as(people["scientist"])
    scoped = bearer(key_on_page(browser.post(TOKENS_PAGE, {"name": "alpha only", "project": "alpha"})))
    unscoped = bearer(key_on_page(browser.post(TOKENS_PAGE, {"name": "everything"})))

    assert [p["slug"] for p in unscoped.get("/api/v1/projects/").json()["results"]] == ["alpha", "beta"]
    assert [p["slug"] for p in scoped.get("/api/v1/projects/").json()["results"]] == ["alpha"]
    assert scoped.get("/api/v1/projects/alpha/members/").status_code == 200
    assert scoped.get("/api/v1/projects/beta/").status_code == 404
    assert scoped.get("/api/v1/projects/beta/members/").status_code == 404
    assert unscoped.get("/api/v1/projects/beta/members/").status_code == 200


# --- Rejected tokens --------------------------------------------------------------------------------------


def test_an_expired_token_is_refused_saying_so(people, api_as):
    created = api_as(people["viewer"]).post("/api/v1/tokens/", {"name": "soon"}, format="json").json()
    ApiToken.objects.filter(pk=created["id"]).update(expires_at=timezone.now() - timedelta(minutes=1))

    response = bearer(created["key"]).get("/api/v1/projects/")

    assert response.status_code == 401
    assert response.json()["detail"] == "This token is expired. Create a new one."


def test_a_deactivated_users_token_is_refused(people, api_as):
    created = api_as(people["viewer"]).post("/api/v1/tokens/", {"name": "x"}, format="json").json()
    User.objects.filter(username="viewer").update(is_active=False)

    response = bearer(created["key"]).get("/api/v1/projects/")

    assert response.status_code == 401
    assert "deactivated" in response.json()["detail"]


def test_an_unknown_token_is_refused(db):
    response = bearer("pt_made-up").get("/api/v1/projects/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "errors": {}}


# --- Password for a token ----------------------------------------------------------------------------------


def test_username_and_password_give_a_working_token(people):
    response = APIClient().post(TOKEN_LOGIN, {"username": "viewer", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert list(response.json()) == ["token"]
    key = response.json()["token"]
    assert_key_not_stored(key)
    projects = bearer(key).get("/api/v1/projects/")
    assert projects.status_code == 200
    assert [p["slug"] for p in projects.json()["results"]] == ["alpha"]
    assert last_event("token.create").actor == people["viewer"]


@pytest.mark.parametrize(("username", "password"), [("viewer", "wrong-password"), ("nobody", PASSWORD)],
                         ids=["wrong password", "unknown user"])
def test_bad_credentials_answer_401_json(username, password, people):
    response = APIClient().post(TOKEN_LOGIN, {"username": username, "password": password}, format="json")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid username or password.", "errors": {}}
    assert not ApiToken.objects.exists()
    assert last_event("auth.login_failed").actor_label == username


def test_a_deactivated_user_gets_no_token(people):
    User.objects.filter(username="viewer").update(is_active=False)
    response = APIClient().post(TOKEN_LOGIN, {"username": "viewer", "password": PASSWORD}, format="json")
    assert response.status_code == 401
    assert not ApiToken.objects.exists()


def test_a_token_request_without_a_password_names_the_field(db):
    response = APIClient().post(TOKEN_LOGIN, {"username": "viewer"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["errors"]


def _token_rate(settings) -> int:
    # The throttle reads DRF's settings once, at import; we only read the configured number here.
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])


def test_the_token_endpoint_is_rate_limited_per_client_address(people, settings):
    limit = _token_rate(settings)
    client = APIClient(REMOTE_ADDR="10.9.8.7")
    for attempt in range(limit):
        # Different usernames, so the login lockout (per username) is not what stops us.
        response = client.post(TOKEN_LOGIN, {"username": f"guess{attempt}", "password": "x"}, format="json")
        assert response.status_code == 401, f"attempt {attempt + 1} of {limit}"

    throttled = client.post(TOKEN_LOGIN, {"username": "viewer", "password": PASSWORD}, format="json")

    assert throttled.status_code == 429
    assert "throttled" in throttled.json()["detail"]
    assert throttled.json()["errors"] == {}
    assert int(throttled["Retry-After"]) > 0
    assert not ApiToken.objects.exists(), "even the right password gets no token while throttled"
    elsewhere = APIClient(REMOTE_ADDR="10.9.8.8").post(
        TOKEN_LOGIN, {"username": "viewer", "password": PASSWORD}, format="json")
    assert elsewhere.status_code == 200


def test_a_made_up_forwarded_for_header_does_not_escape_the_rate_limit(people, settings):
    limit = _token_rate(settings)
    client = APIClient(REMOTE_ADDR="10.9.8.7")
    statuses = [
        client.post(TOKEN_LOGIN, {"username": f"guess{attempt}", "password": "x"}, format="json",
                    HTTP_X_FORWARDED_FOR=f"203.0.113.{attempt}").status_code
        for attempt in range(limit + 1)
    ]
    assert statuses == [401] * limit + [429]
