"""Single sign-on against a real OpenID Connect provider on loopback (oidc-provider-mock): the redirect flow
through Django's test client, with our backend making real HTTP calls for the token, keys and userinfo.
Group mappings at each login, hand-made memberships left alone, refusals, local-login modes, the mapping
page and API, and the audit trail."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts import sso_services
from apps.accounts.models import GroupMapping, Membership, User
from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD, ROOT

LOGIN = "/accounts/login/"
API = "/api/v1/sso/group-mappings/"
PAGE = "/sso/group-mappings/"


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def set_claims(provider: str, sub: str, **claims) -> None:
    response = requests.put(f"{provider}/users/{sub}", json={"email": f"{sub}@agency.example", **claims}, timeout=5)
    assert response.status_code == 204, response.text


def start(client, next_url: str = "") -> str:
    """Click "Sign in with …": returns the provider's authorization URL the browser is sent to."""
    response = client.get("/oidc/authenticate/" + (f"?next={next_url}" if next_url else ""))
    assert response.status_code == 302
    return response["Location"]


def authorize(authorize_url: str, sub: str | None = None, *, deny: bool = False) -> str:
    """Submit the provider's form as `sub` (or deny); returns the callback path + query it redirects to."""
    data = {"action": "deny"} if deny else {"sub": sub}
    response = requests.post(authorize_url, data=data, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["Location"])
    assert location.path == "/oidc/callback/"
    return f"{location.path}?{location.query}"


def sso_login(client, provider: str, sub: str, next_url: str = "", **claims):
    set_claims(provider, sub, **claims)
    return client.get(authorize(start(client, next_url), sub))


def user_of(client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.filter(pk=user_id).first() if user_id else None


@pytest.fixture
def approvers_map(project, people):
    return sso_services.create_group_mapping(actor=people["staff"], group="ds-alpha-approvers", project=project,
                                             role="approver")


# --- The flow ----------------------------------------------------------------------------------------


def test_login_page_offers_the_provider_button_only_when_sso_is_configured(db, client, settings, sso_on):
    assert 'href="/oidc/authenticate/"' in text_of(client.get(LOGIN))
    assert "Sign in with Agency ID" in text_of(client.get(LOGIN))
    settings.OIDC_ISSUER = ""
    page = text_of(client.get(LOGIN))
    assert "Sign in with Agency ID" not in page and 'name="password"' in page
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


def test_first_sso_login_creates_the_user_applies_the_mapping_and_is_audited(client, sso_on, approvers_map):
    authorize_url = start(client, "/projects/alpha/")
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["client_id"] == ["portal"] and query["scope"] == ["openid email profile"]
    set_claims(sso_on, "u-123", preferred_username="alice", given_name="Alice", family_name="Ng",
               groups=["ds-alpha-approvers", "canteen-committee"])

    response = client.get(authorize(authorize_url, "u-123"))

    assert response.status_code == 302 and response["Location"] == "/projects/alpha/"
    alice = User.objects.get(username="alice")
    assert user_of(client) == alice
    assert (alice.email, alice.first_name, alice.last_name) == ("u-123@agency.example", "Alice", "Ng")
    assert not alice.has_usable_password()
    membership = Membership.objects.get(user=alice)
    assert (membership.project.slug, membership.role, membership.source) == ("alpha", "approver", "sso")
    assert client.get("/projects/alpha/").status_code == 200
    login = AuditEvent.objects.get(action="auth.login")
    assert login.actor == alice and login.details == {"method": "sso"}
    added = AuditEvent.objects.get(action="membership.add")
    assert added.actor is None and added.actor_label == "single sign-on"
    assert added.details == {"user": "alice", "role": "approver", "source": "sso", "groups": ["ds-alpha-approvers"]}
    assert AuditEvent.objects.filter(action="user.create", details__method="sso").count() == 1


def test_a_mapping_change_applies_at_the_next_login_and_a_lost_group_revokes(client, sso_on, approvers_map, people):
    sso_login(client, sso_on, "bob", groups=["ds-alpha-approvers"])
    bob = User.objects.get(username="bob")
    assert Membership.objects.get(user=bob).role == "approver"

    sso_services.change_group_mapping(approvers_map, actor=people["staff"], role="scientist")
    sso_login(Client(), sso_on, "bob", groups=["ds-alpha-approvers"])
    assert Membership.objects.get(user=bob).role == "scientist"
    changed = AuditEvent.objects.get(action="membership.change_role")
    assert changed.details["from"] == "approver" and changed.details["to"] == "scientist"

    second = Client()
    sso_login(second, sso_on, "bob", groups=[])
    assert not Membership.objects.filter(user=bob).exists()
    assert AuditEvent.objects.get(action="membership.remove").details["source"] == "sso"
    assert second.get("/projects/alpha/").status_code == 404  # signed in, but no longer a member
    assert AuditEvent.objects.filter(action="auth.login", actor=bob).count() == 3


def test_the_strongest_role_wins_when_two_groups_map_the_same_project(client, sso_on, approvers_map, people,
                                                                     project):
    sso_services.create_group_mapping(actor=people["staff"], group="ds-alpha-readers", project=project, role="viewer")
    sso_login(client, sso_on, "carol", groups=["ds-alpha-readers", "ds-alpha-approvers"])
    assert Membership.objects.get(user__username="carol").role == "approver"


def test_a_single_group_sent_as_a_string_counts(client, sso_on, approvers_map):
    sso_login(client, sso_on, "dana", groups="ds-alpha-approvers")
    assert Membership.objects.get(user__username="dana").role == "approver"


def test_the_groups_claim_name_is_configurable(client, settings, sso_on, approvers_map):
    settings.OIDC_GROUPS_CLAIM = "roles"
    sso_login(client, sso_on, "erin", roles=["ds-alpha-approvers"], groups=["nothing"])
    assert Membership.objects.get(user__username="erin").role == "approver"


def test_hand_made_memberships_are_never_touched(client, sso_on, people, project, other_project):
    staff = people["staff"]
    sso_services.create_group_mapping(actor=staff, group="everyone-admin", project=project, role="admin")
    sso_services.create_group_mapping(actor=staff, group="beta-approvers", project=other_project, role="approver")
    viewer = people["viewer"]  # a local account added by hand to alpha as viewer, now signing in through SSO

    sso_login(client, sso_on, "viewer", groups=["everyone-admin", "beta-approvers"])
    assert user_of(client) == viewer
    assert Membership.objects.get(user=viewer, project=project).role == "viewer"  # not upgraded
    assert Membership.objects.get(user=viewer, project=other_project).source == "sso"

    sso_login(Client(), sso_on, "viewer", groups=[])
    assert Membership.objects.get(user=viewer, project=project).role == "viewer"  # not revoked either
    assert not Membership.objects.filter(user=viewer, project=other_project).exists()
    assert viewer.has_usable_password()  # SSO does not take away a local password


def test_a_deactivated_user_is_refused_with_a_plain_page(client, sso_on, people, approvers_map):
    people["scientist"].is_active = False
    people["scientist"].save()

    response = sso_login(client, sso_on, "scientist", groups=["ds-alpha-approvers"])

    assert response.status_code == 403
    assert "Your portal account is deactivated" in text_of(response)
    assert user_of(client) is None
    assert Membership.objects.get(user=people["scientist"]).role == "scientist"  # no mapping applied
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.details == {"method": "sso", "reason": "deactivated"} and failed.actor_label == "scientist"
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_a_refusal_at_the_provider_lands_on_a_plain_page(client, sso_on, db):
    response = client.get(authorize(start(client), deny=True))
    assert response.status_code == 400
    assert "cancelled or refused at the sign-in service" in text_of(response)
    assert user_of(client) is None
    assert AuditEvent.objects.get(action="auth.login_failed").details["reason"] == "provider error"


def test_a_state_this_browser_did_not_start_is_refused(client, sso_on, db):
    set_claims(sso_on, "mallory")
    callback = authorize(start(Client()), "mallory")  # started in another browser
    start(client)  # this browser has a state of its own, but not that one

    for browser in (client, Client()):
        response = browser.get(callback)
        assert response.status_code == 400
        assert "took too long or was started in another browser" in text_of(response)
    assert user_of(client) is None
    assert not User.objects.filter(username="mallory").exists()
    assert set(AuditEvent.objects.filter(action="auth.login_failed").values_list("details__reason", flat=True)) == {
        "state mismatch"}


def test_a_callback_replayed_in_another_browser_is_refused_without_a_500(client, sso_on, db):
    set_claims(sso_on, "frank")
    authorize_url = start(client)
    callback = authorize(authorize_url, "frank")
    assert client.get(callback).status_code == 302
    replay = Client()
    start(replay)
    response = replay.get(callback)
    assert response.status_code == 400


def test_an_unreachable_provider_gives_a_plain_page(client, settings, sso_on, db):
    settings.OIDC_ISSUER = "http://127.0.0.1:9"
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503
    assert "could not be reached" in text_of(response)


def test_logout_ends_the_portal_session_and_the_providers(client, sso_on, approvers_map):
    sso_login(client, sso_on, "gina", groups=["ds-alpha-approvers"])
    assert user_of(client) is not None
    id_token = client.session["oidc_id_token"]
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{sso_on}/oauth2/end_session"
    query = parse_qs(location.query)
    assert query["id_token_hint"] == [id_token] and query["client_id"] == ["portal"]
    assert query["post_logout_redirect_uri"] == ["http://testserver" + LOGIN]
    assert user_of(client) is None and client.get("/projects/alpha/").status_code == 302
    assert AuditEvent.objects.get(action="auth.logout").actor.username == "gina"
    # The provider knows the page: it offers to end its session and send the browser back.
    page = requests.get(response["Location"], timeout=5)
    assert page.status_code == 200
    assert user_of(client) is None
    assert client.get("/projects/alpha/").status_code == 302
    assert AuditEvent.objects.get(action="auth.logout").actor.username == "gina"


def test_password_logins_are_audited_with_their_method(client, people):
    client.post(LOGIN, {"username": "viewer", "password": PASSWORD})
    assert AuditEvent.objects.get(action="auth.login").details == {"method": "password"}


# --- PORTAL_LOCAL_LOGIN -----------------------------------------------------------------------------


def test_admins_mode_lets_staff_use_a_password_and_refuses_others_clearly(client, settings, sso_on, people):
    settings.PORTAL_LOCAL_LOGIN = "admins"
    page = text_of(client.get(LOGIN))
    assert "Administrator sign-in" in page and 'name="password"' in page

    response = client.post(LOGIN, {"username": "viewer", "password": PASSWORD})
    assert response.status_code == 200
    assert "reserved for administrators" in text_of(response) and "Sign in with Agency ID" in text_of(response)
    assert user_of(client) is None
    refused = AuditEvent.objects.get(action="auth.login_failed")
    assert refused.details == {"method": "password", "reason": "local login restricted"}
    assert "That username and password do not match" in text_of(
        client.post(LOGIN, {"username": "viewer", "password": "wrong-password"}))

    assert client.post(LOGIN, {"username": "staffer", "password": PASSWORD}).status_code == 302


def test_admins_mode_applies_to_the_token_endpoint(settings, people):
    settings.PORTAL_LOCAL_LOGIN = "admins"
    api = APIClient()
    refused = api.post("/api/v1/auth/token/", {"username": "admin", "password": PASSWORD}, format="json")
    assert refused.status_code == 403 and "reserved for administrators" in refused.json()["detail"]
    wrong = api.post("/api/v1/auth/token/", {"username": "admin", "password": "nope-nope"}, format="json")
    assert wrong.status_code == 401
    ok = api.post("/api/v1/auth/token/", {"username": "staffer", "password": PASSWORD}, format="json")
    assert ok.status_code == 200 and ok.json()["token"]


def test_off_mode_hides_the_password_form_and_refuses_everyone(client, settings, sso_on, people):
    settings.PORTAL_LOCAL_LOGIN = "off"
    page = text_of(client.get(LOGIN))
    assert "Sign in with Agency ID" in page and 'name="password"' not in page
    response = client.post(LOGIN, {"username": "staffer", "password": PASSWORD})
    assert response.status_code == 200 and "switched off" in text_of(response)
    assert user_of(client) is None
    token = APIClient().post("/api/v1/auth/token/", {"username": "staffer", "password": PASSWORD}, format="json")
    assert token.status_code == 403 and "switched off" in token.json()["detail"]


@pytest.mark.parametrize(("environment", "message"), [
    ({"PORTAL_LOCAL_LOGIN": "sometimes"}, "PORTAL_LOCAL_LOGIN must be on, admins or off"),
    ({"PORTAL_LOCAL_LOGIN": "off"}, "leaves nobody able to sign in"),
    ({"OIDC_ISSUER": "idp.example", "OIDC_CLIENT_ID": "x"}, "OIDC_ISSUER must be an http(s) URL"),
])
def test_bad_sso_settings_stop_startup_with_a_clear_message(environment, message, tmp_path):
    env = {**os.environ, "DEBUG": "1", "PORTAL_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "portal.settings",
           **environment}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr


# --- The mapping page (site staff) ------------------------------------------------------------------


def test_the_mapping_page_is_for_staff_only(client_as, client, people, approvers_map):
    assert client.get(PAGE).status_code == 302  # anonymous: to the sign-in page
    for name in ("admin", "viewer", "outsider"):
        browser = client_as(people[name])
        assert browser.get(PAGE).status_code == 403
        assert browser.post(PAGE, {"group": "g", "project": "alpha", "role": "admin"}).status_code == 403
        assert browser.post(f"{PAGE}{approvers_map.uuid}/delete/").status_code == 403
    assert GroupMapping.objects.count() == 1
    page = text_of(client_as(people["staff"]).get(PAGE))
    assert "ds-alpha-approvers" in page


def test_staff_add_and_delete_mappings_on_the_page_with_audit(client_as, people):
    staff = client_as(people["staff"])
    response = staff.post(PAGE, {"group": " ds-beta-scientists ", "project": "beta", "role": "scientist"})
    assert response.status_code == 302
    mapping = GroupMapping.objects.get()
    assert (mapping.group, mapping.project.slug, mapping.role) == ("ds-beta-scientists", "beta", "scientist")
    created = AuditEvent.objects.get(action="sso.mapping.create")
    assert created.actor == people["staff"] and created.details == {"group": "ds-beta-scientists", "role": "scientist"}

    confirm = staff.get(f"{PAGE}{mapping.uuid}/delete/")
    assert confirm.status_code == 200 and "Delete mapping" in text_of(confirm)
    assert staff.post(f"{PAGE}{mapping.uuid}/delete/").status_code == 302
    assert not GroupMapping.objects.exists()
    assert AuditEvent.objects.get(action="sso.mapping.delete").details["group"] == "ds-beta-scientists"


def test_the_mapping_form_explains_bad_input(client_as, people, approvers_map):
    staff = client_as(people["staff"])
    cases = [({"group": "", "project": "alpha", "role": "viewer"}, "This field is required"),
             ({"group": "g", "project": "nope", "role": "viewer"}, "Select a valid choice"),
             ({"group": "g", "project": "alpha", "role": "owner"}, "Select a valid choice"),
             ({"group": "ds-alpha-approvers", "project": "alpha", "role": "viewer"}, "already has a role in Alpha")]
    for data, message in cases:
        response = staff.post(PAGE, data)
        assert response.status_code == 400 and message in text_of(response), data
    assert GroupMapping.objects.count() == 1


# --- The mapping API ---------------------------------------------------------------------------------


def test_the_mapping_api_lets_staff_list_create_change_and_delete(api_as, people, approvers_map):
    api = api_as(people["staff"])
    listed = api.get(API).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [(r["group"], r["project"], r["role"]) for r in rows] == [("ds-alpha-approvers", "alpha", "approver")]

    created = api.post(API, {"group": "ds-beta-viewers", "project": "beta", "role": "viewer"}, format="json")
    assert created.status_code == 201, created.json()
    url = f"{API}{created.json()['id']}/"
    changed = api.patch(url, {"role": "scientist"}, format="json")
    assert changed.status_code == 200 and changed.json()["role"] == "scientist"
    assert api.delete(url).status_code == 204
    actions = list(AuditEvent.objects.filter(action__startswith="sso.mapping").order_by("sequence")
                   .values_list("action", flat=True))
    assert actions == ["sso.mapping.create", "sso.mapping.create", "sso.mapping.change", "sso.mapping.delete"]


@pytest.mark.parametrize(("body", "field"), [
    ({"project": "alpha", "role": "viewer"}, "group"),
    ({"group": "  ", "project": "alpha", "role": "viewer"}, "group"),
    ({"group": "g", "project": "no-such-project", "role": "viewer"}, "project"),
    ({"group": "g", "project": "alpha", "role": "owner"}, "role"),
    ({"group": "ds-alpha-approvers", "project": "alpha", "role": "viewer"}, "group"),
])
def test_the_mapping_api_answers_bad_input_with_400_naming_the_field(api_as, people, approvers_map, body, field):
    response = api_as(people["staff"]).post(API, body, format="json")
    assert response.status_code == 400 and field in response.json()["errors"], response.json()
    assert GroupMapping.objects.count() == 1


def test_the_mapping_api_refuses_non_staff(api_as, people, approvers_map, project):
    url = f"{API}{approvers_map.uuid}/"
    for name in ("admin", "viewer", "outsider"):
        api = api_as(people[name])
        assert api.get(API).status_code == 403
        assert api.post(API, {"group": "g", "project": "alpha", "role": "admin"}, format="json").status_code == 403
        assert api.patch(url, {"role": "admin"}, format="json").status_code == 403
        assert api.delete(url).status_code == 403
    assert APIClient().get(API).status_code in (401, 403)
    assert api_as(people["staff"], project=project).get(API).status_code == 403  # a project-limited token
    assert GroupMapping.objects.get().role == "approver"


def test_an_sso_session_ends_when_the_account_is_deactivated(client, sso_on, approvers_map):
    sso_login(client, sso_on, "hana", groups=["ds-alpha-approvers"])
    assert client.get("/projects/alpha/").status_code == 200
    User.objects.filter(username="hana").update(is_active=False)  # even without the service ending sessions
    assert client.get("/projects/alpha/").status_code == 302


def test_a_break_glass_administrator_account_cannot_be_opened_through_sso(client, sso_on, people, approvers_map):
    """Accounts are matched by user name: a provider naming someone `staffer` must not open that local admin."""
    response = sso_login(client, sso_on, "staffer-at-idp", preferred_username="staffer", groups=["ds-alpha-approvers"])

    assert response.status_code == 403
    assert "local administrator account" in text_of(response)
    assert user_of(client) is None
    assert not Membership.objects.filter(user=people["staff"]).exists()  # no mapping applied either
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.details == {"method": "sso", "reason": "privileged local account"}
    assert failed.actor_label == "staffer"


def test_staff_status_given_to_an_sso_account_keeps_it_usable(client, sso_on, approvers_map):
    sso_login(client, sso_on, "sam", preferred_username="sam", groups=["ds-alpha-approvers"])
    sam = User.objects.get(username="sam")
    sam.is_staff = True
    sam.save()
    client.logout()

    sso_login(client, sso_on, "sam", preferred_username="sam", groups=["ds-alpha-approvers"])
    assert user_of(client) == sam


def test_a_provider_that_names_nobody_is_refused_plainly(client, sso_on, db):
    response = sso_login(client, sso_on, "!!!", preferred_username="!!!")
    assert response.status_code == 403
    assert "did not tell the portal who you are" in text_of(response)
    assert AuditEvent.objects.get(action="auth.login_failed").details["reason"] == "claims refused"


def test_logout_stays_in_the_portal_when_provider_logout_is_off(client, settings, sso_on, approvers_map):
    settings.OIDC_SIGN_OUT_AT_PROVIDER = False
    sso_login(client, sso_on, "gina", groups=["ds-alpha-approvers"])
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == LOGIN
    assert user_of(client) is None


def test_password_sessions_sign_out_in_the_portal_only(client, sso_on, people):
    client.post(LOGIN, {"username": "staffer", "password": PASSWORD})
    assert user_of(client) is not None
    response = client.post("/accounts/logout/")
    assert response["Location"] == LOGIN and user_of(client) is None
