"""Signing in and out: audit events with the client address, lockout after repeated failures, password reset,
and the home page each demo role lands on."""

from __future__ import annotations

import html
import io
import re

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD

LOGIN = "/accounts/login/"
TOKEN_LOGIN = "/api/v1/auth/token/"
LOCKED_MESSAGE = ("Too many failed sign-in attempts. Wait {minutes} minute(s) before trying again "
                  "(each further attempt restarts the wait).")
WRONG_MESSAGE = "That username and password do not match."
NEW_PASSWORD = "Lighthouse-keeper-47"


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def sign_in(client, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


def fail_until_locked(settings, username: str = "viewer", ip: str = "10.0.0.1") -> None:
    client = Client()
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        response = sign_in(client, username, "not-the-password", ip)
        assert WRONG_MESSAGE in text_of(response)


def locked_message(settings) -> str:
    return LOCKED_MESSAGE.format(minutes=max(1, round(settings.LOGIN_LOCKOUT_SECONDS / 60)))


def signed_in_user(response):
    return response.wsgi_request.user if response.wsgi_request.user.is_authenticated else None


def test_the_login_page_renders(db, client):
    response = client.get(LOGIN)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="username"' in page and 'name="password"' in page
    assert 'href="/accounts/password/reset/"' in page


def test_a_good_login_goes_home_and_is_audited_with_the_client_address(people, client):
    response = sign_in(client, "viewer", PASSWORD, ip="192.0.2.44")

    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    event = AuditEvent.objects.get(action="auth.login")
    assert event.actor == people["viewer"]
    assert event.client_ip == "192.0.2.44"


def test_a_login_follows_next(people, client):
    response = client.post(LOGIN, {"username": "viewer", "password": PASSWORD, "next": "/projects/alpha/"})
    assert response["Location"] == "/projects/alpha/"


def test_logout_is_a_post_and_is_audited(people, client):
    sign_in(client, "viewer", PASSWORD)

    response = client.post("/accounts/logout/", REMOTE_ADDR="192.0.2.45")

    assert response.status_code == 302 and response["Location"] == LOGIN
    assert client.get("/").status_code == 302
    event = AuditEvent.objects.get(action="auth.logout")
    assert (event.actor, event.client_ip) == (people["viewer"], "192.0.2.45")


def test_a_wrong_password_says_so_and_is_audited(people, client):
    response = sign_in(client, "viewer", "Correct-Horse", ip="192.0.2.46")

    assert response.status_code == 200
    assert signed_in_user(response) is None
    assert WRONG_MESSAGE in text_of(response)
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.actor is None
    assert event.actor_label == "viewer"
    assert event.object_id == str(people["viewer"].uuid)
    assert event.client_ip == "192.0.2.46"
    assert event.details == {"attempt": 1, "locked": False}
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_repeated_failures_lock_the_username_out_even_with_the_right_password(people, settings):
    fail_until_locked(settings)

    response = sign_in(Client(), "viewer", PASSWORD)

    assert response.status_code == 200
    assert signed_in_user(response) is None
    assert locked_message(settings) in text_of(response)
    assert not AuditEvent.objects.filter(action="auth.login").exists()
    failures = AuditEvent.objects.filter(action="auth.login_failed").order_by("sequence")
    assert failures.count() == settings.LOGIN_FAILURE_LIMIT + 1
    assert failures.last().details["locked"] is True


def test_the_lockout_is_per_username_and_address(people, settings):
    fail_until_locked(settings, username="viewer", ip="10.0.0.1")

    assert signed_in_user(sign_in(Client(), "viewer", PASSWORD, ip="10.0.0.2")) == people["viewer"]
    assert signed_in_user(sign_in(Client(), "scientist", PASSWORD, ip="10.0.0.1")) == people["scientist"]


def test_the_lockout_ignores_the_case_of_the_username(people, settings):
    fail_until_locked(settings, username="VIEWER")
    assert locked_message(settings) in text_of(sign_in(Client(), "viewer", PASSWORD))


def test_failures_below_the_limit_do_not_lock_and_a_success_resets_the_count(people, settings):
    client = Client()
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        sign_in(client, "viewer", "nope")
    assert signed_in_user(sign_in(Client(), "viewer", PASSWORD)) == people["viewer"]

    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        sign_in(client, "viewer", "nope")
    assert signed_in_user(sign_in(Client(), "viewer", PASSWORD)) == people["viewer"]


def test_the_lockout_also_applies_to_the_token_endpoint(people, settings):
    fail_until_locked(settings, ip="10.0.0.1")

    locked = APIClient(REMOTE_ADDR="10.0.0.1").post(
        TOKEN_LOGIN, {"username": "viewer", "password": PASSWORD}, format="json")
    other_address = APIClient(REMOTE_ADDR="10.0.0.3").post(
        TOKEN_LOGIN, {"username": "viewer", "password": PASSWORD}, format="json")

    assert locked.status_code == 401
    assert "wait" in locked.json()["detail"].lower()
    assert "token" not in locked.json()
    assert other_address.status_code == 200 and other_address.json()["token"]


def test_failures_at_the_token_endpoint_lock_the_login_page_too(people, settings):
    api = APIClient(REMOTE_ADDR="10.0.0.1")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        assert api.post(TOKEN_LOGIN, {"username": "viewer", "password": "nope"}, format="json").status_code == 401

    assert locked_message(settings) in text_of(sign_in(Client(), "viewer", PASSWORD, ip="10.0.0.1"))


# --- Password reset ------------------------------------------------------------------------------------


def test_password_reset_mails_a_link_that_sets_a_new_password(people, client, mailoutbox):
    response = client.post("/accounts/password/reset/", {"email": "viewer@example.org"}, follow=True)

    assert "Check your e-mail" in text_of(response)
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["viewer@example.org"]
    link = re.search(r"https?://[^/\s]+(/accounts/password/reset/\S+/)", mailoutbox[0].body).group(1)

    form = client.get(link, follow=True)
    assert form.context["validlink"]
    done = client.post(form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
                       follow=True)
    assert "Password set" in text_of(done)

    assert signed_in_user(sign_in(Client(), "viewer", PASSWORD)) is None
    assert signed_in_user(sign_in(Client(), "viewer", NEW_PASSWORD)) == people["viewer"]
    used_again = Client().get(link, follow=True)
    assert not used_again.context["validlink"], "a reset link works once"


def test_password_reset_for_an_unknown_address_sends_nothing_and_reveals_nothing(people, client, mailoutbox):
    known = client.post("/accounts/password/reset/", {"email": "viewer@example.org"}, follow=True)
    unknown = client.post("/accounts/password/reset/", {"email": "nobody@example.org"}, follow=True)

    assert len(mailoutbox) == 1
    assert known.redirect_chain == unknown.redirect_chain

    def without_csrf(response):
        return re.sub(r"[A-Za-z0-9]{64}", "", text_of(response))

    assert without_csrf(known) == without_csrf(unknown)


def test_a_weak_new_password_is_refused_with_the_reason(people, client, mailoutbox):
    client.post("/accounts/password/reset/", {"email": "viewer@example.org"})
    link = re.search(r"(/accounts/password/reset/\S+/)", mailoutbox[0].body).group(1)
    form = client.get(link, follow=True)

    response = client.post(form.redirect_chain[-1][0], {"new_password1": "short", "new_password2": "short"})

    assert response.status_code == 200
    assert "too short" in text_of(response)
    assert signed_in_user(sign_in(Client(), "viewer", PASSWORD)) == people["viewer"]


# --- Home page per demo role ------------------------------------------------------------------------------

DEMO_PASSWORD = "demo-password-for-tests-1"


@pytest.fixture
def demo(db, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", DEMO_PASSWORD)
    call_command("load_demo", stdout=io.StringIO())


@pytest.mark.parametrize(("username", "approvals", "admin"), [
    ("admin", True, True),
    ("approver1", True, False),
    ("approver2", True, False),
    ("scientist", False, False),
    ("viewer", False, False),
])
def test_each_demo_role_sees_its_home_sections(username, approvals, admin, demo):
    client = Client()
    assert signed_in_user(sign_in(client, username, DEMO_PASSWORD)).username == username

    page = client.get("/").content.decode()

    assert 'data-section="projects"' in page and "Demo project" in page
    assert 'data-section="jobs"' in page
    assert ('data-section="approvals"' in page) is approvals
    assert ('data-section="admin"' in page) is admin


@pytest.mark.parametrize(("persona", "approvals", "admin"), [
    ("staff", False, True),
    ("outsider", True, True),
])
def test_staff_and_other_projects_admins_see_the_admin_section(persona, approvals, admin, people, client_as):
    page = client_as(people[persona]).get("/").content.decode()
    assert ('data-section="approvals"' in page) is approvals
    assert ('data-section="admin"' in page) is admin


def test_a_deactivated_user_cannot_sign_in(people):
    User.objects.filter(username="viewer").update(is_active=False)
    response = sign_in(Client(), "viewer", PASSWORD)
    assert signed_in_user(response) is None
    assert WRONG_MESSAGE in text_of(response)


def test_an_invited_user_who_never_set_a_password_can_ask_for_a_new_link(people, project, client, mailoutbox):
    from apps.accounts import services

    services.invite_member(project, actor=people["admin"], email="late@example.org", role="viewer")
    mailoutbox.clear()
    client.post("/accounts/password/reset/", {"email": "late@example.org"})
    assert len(mailoutbox) == 1 and "/accounts/password/reset/" in mailoutbox[0].body
