"""Access management: add, invite, change role, remove, deactivate and reactivate, through the pages and the API.

Every change must take effect (the member list, the user's sessions and tokens) and leave an audit event
naming who did it and in which project. Status codes per role live in test_permission_matrix.py.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from django.contrib.sessions.models import Session
from django.test import Client

from apps.accounts.models import Membership, Project, User
from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD, make_user

MEMBERS = "/projects/alpha/members/"
API_MEMBERS = "/api/v1/projects/alpha/members/"
NEW_PASSWORD = "Lighthouse-keeper-47"


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def last_event(action: str) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action).order_by("-sequence").first()
    assert event is not None, f"no {action} audit event was written"
    return event


def roles_in_alpha() -> dict[str, str]:
    return dict(Membership.objects.filter(project__slug="alpha").values_list("user__username", "role"))


def post_json(api, method: str, path: str, body: dict):
    return getattr(api, method)(path, data=json.dumps(body), content_type="application/json")


def log_in(client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


@pytest.fixture
def newcomer(db) -> User:
    return make_user("newcomer")


# --- Adding existing users ---------------------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["newcomer", "NewComer@Example.org"], ids=["username", "email"])
def test_admin_adds_an_existing_user_in_the_ui(identifier, people, project, newcomer, client_as):
    admin = client_as(people["admin"])
    response = admin.post(MEMBERS, {"user": identifier, "role": "scientist"}, follow=True)

    assert response.redirect_chain[-1][0] == MEMBERS
    assert "newcomer added as Scientist." in text_of(response)
    assert roles_in_alpha()["newcomer"] == "scientist"
    event = last_event("membership.add")
    assert (event.actor, event.project) == (people["admin"], project)
    assert event.details == {"user": "newcomer", "role": "scientist"}


@pytest.mark.parametrize("identifier", ["newcomer", "newcomer@example.org"], ids=["username", "email"])
def test_admin_adds_an_existing_user_through_the_api(identifier, people, project, newcomer, api_as):
    response = post_json(api_as(people["admin"]), "post", API_MEMBERS, {"user": identifier, "role": "approver"})

    assert response.status_code == 201, response.content
    assert response.json()["user"] == "newcomer"
    assert response.json()["role"] == "approver"
    assert roles_in_alpha()["newcomer"] == "approver"
    event = last_event("membership.add")
    assert (event.actor, event.project) == (people["admin"], project)


def test_adding_without_a_role_makes_a_viewer(people, newcomer, api_as):
    response = post_json(api_as(people["admin"]), "post", API_MEMBERS, {"user": "newcomer"})
    assert response.status_code == 201
    assert roles_in_alpha()["newcomer"] == "viewer"


def test_adding_an_existing_member_again_is_a_clear_form_error(people, client_as):
    admin = client_as(people["admin"])
    before = roles_in_alpha()
    events = AuditEvent.objects.count()
    response = admin.post(MEMBERS, {"user": "viewer", "role": "admin"})

    assert response.status_code == 200
    assert response.context["form"].errors["user"] == ["viewer is already a member."]
    assert "viewer is already a member." in text_of(response)
    assert roles_in_alpha() == before
    assert AuditEvent.objects.count() == events


def test_adding_an_existing_member_again_through_the_api_is_a_400_naming_user(people, api_as):
    before = roles_in_alpha()
    response = post_json(api_as(people["admin"]), "post", API_MEMBERS, {"user": "viewer", "role": "admin"})

    assert response.status_code == 400
    body = response.json()
    assert "already a member" in body["errors"]["user"][0]
    assert body["detail"]
    assert roles_in_alpha() == before


def test_an_unknown_username_is_a_clear_form_error(people, client_as):
    before = roles_in_alpha()
    response = client_as(people["admin"]).post(MEMBERS, {"user": "ghost", "role": "viewer"})

    assert response.status_code == 200
    error = response.context["form"].errors["user"][0]
    assert "No user is called “ghost”" in error and "e-mail address" in error
    assert error in text_of(response)
    assert roles_in_alpha() == before
    assert not User.objects.filter(username="ghost").exists()


def test_an_unknown_username_through_the_api_is_a_400_naming_user(people, api_as):
    response = post_json(api_as(people["admin"]), "post", API_MEMBERS, {"user": "ghost"})
    assert response.status_code == 400
    assert "No such user" in response.json()["errors"]["user"][0]


def test_a_deactivated_user_cannot_be_added_until_reactivated(people, newcomer, api_as):
    User.objects.filter(pk=newcomer.pk).update(is_active=False)
    response = post_json(api_as(people["admin"]), "post", API_MEMBERS, {"user": "newcomer"})
    assert response.status_code == 400
    assert "deactivated" in response.json()["errors"]["user"][0]
    assert "newcomer" not in roles_in_alpha()


# --- Inviting new people -----------------------------------------------------------------------------


def _set_password_through(link: str, password: str):
    """Follow an e-mailed set-password link like a browser would; return the final response."""
    browser = Client()
    path = re.sub(r"^https?://[^/]+", "", link)
    form_page = browser.get(path, follow=True)
    assert form_page.context["validlink"], "the e-mailed link should be valid"
    done = browser.post(form_page.redirect_chain[-1][0],
                        {"new_password1": password, "new_password2": password}, follow=True)
    assert "Password set" in text_of(done)
    return done


def test_inviting_a_new_address_creates_an_account_and_mails_a_set_password_link(
        people, project, client_as, mailoutbox, django_capture_on_commit_callbacks):
    admin = client_as(people["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(MEMBERS, {"user": "Grace.Hopper@Example.org", "role": "scientist"}, follow=True)

    invited = User.objects.get(email__iexact="grace.hopper@example.org")
    assert "Invitation sent to" in text_of(response)
    assert not invited.has_usable_password()
    assert invited.is_active
    assert roles_in_alpha()[invited.username] == "scientist"

    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == [invited.email]
    assert "Alpha" in mail.subject
    assert invited.username in mail.body
    link = re.search(r"https?://\S+/accounts/password/reset/\S+/", mail.body).group(0)

    invite = last_event("user.invite")
    assert (invite.actor, invite.project) == (people["admin"], project)
    assert invite.details == {"email": invited.email}
    added = last_event("membership.add")
    assert (added.actor, added.project) == (people["admin"], project)
    assert added.sequence > invite.sequence

    _set_password_through(link, NEW_PASSWORD)
    browser = Client()
    signed_in = log_in(browser, invited.username, NEW_PASSWORD)
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    assert browser.get("/projects/alpha/").status_code == 200


def test_inviting_through_the_api_by_email(people, project, api_as, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(api_as(people["admin"]), "post", API_MEMBERS,
                             {"email": "ada@example.org", "role": "viewer"})

    assert response.status_code == 201, response.content
    assert response.json()["email"] == "ada@example.org"
    invited = User.objects.get(email="ada@example.org")
    assert not invited.has_usable_password()
    assert [m.to for m in mailoutbox] == [["ada@example.org"]]
    assert "/accounts/password/reset/" in mailoutbox[0].body
    assert last_event("user.invite").project == project


def test_an_invited_address_with_characters_usernames_forbid_gets_a_valid_username(people, api_as):
    api = api_as(people["admin"])
    response = post_json(api, "post", API_MEMBERS, {"email": "o'brien#1@example.org"})
    assert response.status_code == 201

    username = response.json()["user"]
    User.username_validator(username)
    assert post_json(api, "patch", f"{API_MEMBERS}{username}/", {"role": "scientist"}).status_code == 200


def test_inviting_an_address_that_already_has_an_account_is_refused(people, api_as, mailoutbox):
    users = User.objects.count()
    response = post_json(api_as(people["admin"]), "post", API_MEMBERS, {"email": "outsider@example.org"})
    assert response.status_code == 400
    assert "already has an account" in response.json()["errors"]["user"][0]
    assert User.objects.count() == users
    assert mailoutbox == []


# --- Changing roles and removing -----------------------------------------------------------------------


def test_admin_changes_a_role_in_the_ui(people, project, client_as):
    response = client_as(people["admin"]).post(f"{MEMBERS}viewer/role/", {"viewer-role": "approver"}, follow=True)

    assert "viewer is now Approver." in text_of(response)
    assert roles_in_alpha()["viewer"] == "approver"
    event = last_event("membership.change_role")
    assert (event.actor, event.project) == (people["admin"], project)
    assert event.details == {"user": "viewer", "from": "viewer", "to": "approver"}


def test_admin_changes_a_role_through_the_api(people, project, api_as):
    response = post_json(api_as(people["admin"]), "patch", f"{API_MEMBERS}scientist/", {"role": "admin"})

    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert roles_in_alpha()["scientist"] == "admin"
    event = last_event("membership.change_role")
    assert (event.actor, event.project) == (people["admin"], project)


def test_an_invalid_role_in_the_ui_changes_nothing(people, client_as):
    before = roles_in_alpha()
    response = client_as(people["admin"]).post(f"{MEMBERS}viewer/role/", {"viewer-role": "owner"}, follow=True)
    assert "Choose one of the listed roles." in text_of(response)
    assert roles_in_alpha() == before
    assert not AuditEvent.objects.filter(action="membership.change_role").exists()


def test_removing_asks_for_confirmation_first(people, client_as):
    admin = client_as(people["admin"])
    page = admin.get(f"{MEMBERS}viewer/remove/")

    assert page.status_code == 200
    assert "Remove viewer from Alpha?" in text_of(page)
    assert 'method="post"' in page.content.decode()
    assert "viewer" in roles_in_alpha(), "showing the confirmation must not remove anyone"
    assert not AuditEvent.objects.filter(action="membership.remove").exists()

    response = admin.post(f"{MEMBERS}viewer/remove/", follow=True)
    assert "viewer removed from Alpha." in text_of(response)
    assert "viewer" not in roles_in_alpha()


def test_removed_member_loses_access_and_the_removal_is_audited(people, project, client_as):
    viewer = client_as(people["viewer"])
    assert viewer.get("/projects/alpha/").status_code == 200

    client_as(people["admin"]).post(f"{MEMBERS}viewer/remove/")

    assert viewer.get("/projects/alpha/").status_code == 404
    event = last_event("membership.remove")
    assert (event.actor, event.project) == (people["admin"], project)
    assert event.details == {"user": "viewer", "role": "viewer"}


def test_admin_removes_a_member_through_the_api(people, project, api_as):
    response = api_as(people["admin"]).delete(f"{API_MEMBERS}approver/")
    assert response.status_code == 204
    assert "approver" not in roles_in_alpha()
    assert last_event("membership.remove").project == project


# --- The last active admin ----------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["admin", "staff"])
def test_the_last_admin_cannot_be_demoted_in_the_ui(actor, people, client_as):
    response = client_as(people[actor]).post(f"{MEMBERS}admin/role/", {"admin-role": "viewer"}, follow=True)

    assert "A project must keep at least one active admin. Make someone else admin first." in text_of(response)
    assert roles_in_alpha()["admin"] == "admin"
    assert not AuditEvent.objects.filter(action="membership.change_role").exists()


@pytest.mark.parametrize("actor", ["admin", "staff"])
def test_the_last_admin_cannot_be_removed_in_the_ui(actor, people, client_as):
    response = client_as(people[actor]).post(f"{MEMBERS}admin/remove/", follow=True)

    assert "at least one active admin" in text_of(response)
    assert roles_in_alpha()["admin"] == "admin"
    assert not AuditEvent.objects.filter(action="membership.remove").exists()


def test_the_last_admin_cannot_be_demoted_or_removed_through_the_api(people, api_as):
    api = api_as(people["admin"])
    demote = post_json(api, "patch", f"{API_MEMBERS}admin/", {"role": "scientist"})
    remove = api.delete(f"{API_MEMBERS}admin/")

    for response in (demote, remove):
        assert response.status_code == 400
        assert "at least one active admin" in response.json()["errors"]["role"][0]
    assert roles_in_alpha()["admin"] == "admin"


def test_a_deactivated_admin_does_not_count_as_the_other_admin(people, client_as):
    Membership.objects.filter(user=people["approver"]).update(role="admin")
    User.objects.filter(pk=people["approver"].pk).update(is_active=False)

    client_as(people["admin"]).post(f"{MEMBERS}admin/role/", {"admin-role": "viewer"})
    assert roles_in_alpha()["admin"] == "admin"


def test_an_admin_may_step_down_once_someone_else_is_admin(people, client_as):
    admin = client_as(people["admin"])
    admin.post(f"{MEMBERS}approver/role/", {"approver-role": "admin"})
    response = admin.post(f"{MEMBERS}admin/role/", {"admin-role": "viewer"})

    assert response.status_code == 302
    assert roles_in_alpha()["admin"] == "viewer"
    assert admin.get(MEMBERS).status_code == 403, "a former admin no longer manages members"


# --- Deactivating and reactivating users ----------------------------------------------------------------


def _sessions_of(user) -> list[Session]:
    return [s for s in Session.objects.all() if s.get_decoded().get("_auth_user_id") == str(user.pk)]


def test_deactivating_a_user_ends_their_sessions_tokens_and_logins(people, client_as, api_as):
    scientist = people["scientist"]
    browser = client_as(scientist)
    script = api_as(scientist)
    assert browser.get("/").status_code == 200
    assert script.get("/api/v1/projects/").status_code == 200
    assert _sessions_of(scientist)

    admin = client_as(people["admin"])
    confirm = admin.get(f"/users/scientist/deactivate/?next={MEMBERS}")
    assert confirm.status_code == 200
    assert "Deactivate scientist?" in text_of(confirm)
    assert User.objects.get(pk=scientist.pk).is_active, "the confirmation page must not deactivate"

    response = admin.post("/users/scientist/deactivate/", {"next": MEMBERS})
    assert response.status_code == 302 and response["Location"] == MEMBERS

    assert not User.objects.get(pk=scientist.pk).is_active
    assert _sessions_of(scientist) == []
    signed_out = browser.get("/")
    assert signed_out.status_code == 302 and signed_out["Location"].startswith("/accounts/login/")
    refused = script.get("/api/v1/projects/")
    assert refused.status_code == 401 and refused.json()["detail"]
    login = log_in(Client(), "scientist", PASSWORD)
    assert login.status_code == 200 and not login.wsgi_request.user.is_authenticated

    event = last_event("user.deactivate")
    assert event.actor == people["admin"]
    assert event.object_id == str(scientist.uuid)


def test_reactivating_restores_login_but_not_old_sessions(people, client_as):
    scientist = people["scientist"]
    old_browser = client_as(scientist)
    admin = client_as(people["admin"])
    admin.post("/users/scientist/deactivate/")

    response = admin.post("/users/scientist/activate/", {"next": MEMBERS})

    assert response.status_code == 302
    assert User.objects.get(pk=scientist.pk).is_active
    assert old_browser.get("/").status_code == 302, "sessions ended by deactivation stay ended"
    login = log_in(Client(), "scientist", PASSWORD)
    assert login.status_code == 302 and login["Location"] == "/"
    event = last_event("user.activate")
    assert (event.actor, event.object_id) == (people["admin"], str(scientist.uuid))


def test_deactivating_and_reactivating_through_the_api(people, api_as):
    api = api_as(people["admin"])
    off = api.post("/api/v1/users/viewer/deactivate/")
    assert off.status_code == 200 and off.json() == {"user": "viewer", "is_active": False}
    assert not User.objects.get(username="viewer").is_active

    on = api.post("/api/v1/users/viewer/activate/")
    assert on.status_code == 200 and on.json() == {"user": "viewer", "is_active": True}
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="user.").order_by("sequence")] == [
        "user.deactivate", "user.activate"]


def test_a_project_admin_cannot_deactivate_someone_who_is_also_in_a_project_they_do_not_administer(
        people, other_project, client_as, api_as):
    Membership.objects.create(user=people["scientist"], project=other_project, role="viewer")

    page = client_as(people["admin"]).post("/users/scientist/deactivate/")
    api = api_as(people["admin"]).post("/api/v1/users/scientist/deactivate/")

    assert page.status_code == 403
    assert api.status_code == 403 and api.json()["detail"]
    assert User.objects.get(username="scientist").is_active
    assert not AuditEvent.objects.filter(action="user.deactivate").exists()


def test_an_admin_of_every_project_the_user_is_in_may_deactivate_them(people, other_project, client_as):
    Membership.objects.create(user=people["scientist"], project=other_project, role="viewer")
    Membership.objects.create(user=people["admin"], project=other_project, role="admin")

    response = client_as(people["admin"]).post("/users/scientist/deactivate/")

    assert response.status_code == 302
    assert not User.objects.get(username="scientist").is_active


def test_staff_may_deactivate_a_member_of_several_projects(people, other_project, client_as):
    Membership.objects.create(user=people["scientist"], project=other_project, role="viewer")
    assert client_as(people["staff"]).post("/users/scientist/deactivate/").status_code == 302
    assert last_event("user.deactivate").actor == people["staff"]


@pytest.mark.parametrize("persona", ["admin", "staff"])
def test_nobody_can_deactivate_themselves(persona, people, client_as, api_as):
    user = people[persona]
    page = client_as(user).post(f"/users/{user.username}/deactivate/")
    api = api_as(user).post(f"/api/v1/users/{user.username}/deactivate/")

    assert page.status_code == 403
    assert api.status_code == 403
    assert User.objects.get(pk=user.pk).is_active
    assert not AuditEvent.objects.filter(action="user.deactivate").exists()


def test_the_members_page_offers_deactivation_only_where_it_is_allowed(people, other_project, client_as):
    Membership.objects.create(user=people["scientist"], project=other_project, role="viewer")
    page = client_as(people["admin"]).get(MEMBERS).content.decode()

    assert "/users/viewer/deactivate/" in page
    assert "/users/scientist/deactivate/" not in page, "scientist is also in a project admin does not run"
    assert "/users/admin/deactivate/" not in page, "nobody is offered to deactivate themselves"


def test_staff_cannot_deactivate_the_only_active_admin_of_a_project(people, client_as, api_as):
    response = api_as(people["staff"]).post("/api/v1/users/admin/deactivate/")
    assert response.status_code == 400
    assert "only active admin" in response.json()["errors"]["user"][0]
    page = client_as(people["staff"]).post("/users/admin/deactivate/", {"next": "/"}, follow=True)
    assert "only active admin of Alpha" in page.content.decode()
    people["admin"].refresh_from_db()
    assert people["admin"].is_active


def test_the_project_list_names_each_role_with_one_membership_query(people, project, api_as,
                                                                      django_assert_max_num_queries):
    """`my_role` once asked the database again for every project listed (a regression the load test found)."""
    scientist = people["scientist"]
    api = api_as(scientist)
    api.get("/api/v1/projects/")  # the token's last-used stamp is written on the first call
    for i in range(6):
        extra = Project.objects.create(slug=f"extra-{i}", name=f"Extra {i}")
        Membership.objects.create(user=scientist, project=extra, role="viewer" if i % 2 else "approver")
    with django_assert_max_num_queries(4):  # token, count, page, memberships
        response = api.get("/api/v1/projects/")
    roles = {p["slug"]: p["my_role"] for p in response.json()["results"]}
    assert roles["alpha"] == "scientist" and roles["extra-0"] == "approver" and roles["extra-1"] == "viewer"
    assert len(roles) == 7
