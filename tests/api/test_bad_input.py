"""Bad input to the API answers a clear 4xx with `{"detail", "errors"}` (shared/API.md), never a 500 or an HTML
page, and leaves what is stored exactly as it was."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, Membership, Project, User
from tests.conftest import PASSWORD

MEMBERS = "/api/v1/projects/alpha/members/"


def state() -> dict:
    """Everything a bad request could have changed."""
    return {
        "memberships": sorted(Membership.objects.values_list("project__slug", "user__username", "role")),
        "projects": sorted(Project.objects.values_list("slug", "name")),
        "users": sorted(User.objects.values_list("username", "is_active")),
        "tokens": sorted(ApiToken.objects.values_list("name", "revoked_at")),
    }


def assert_error_body(response, status: int, *, field: str | None = None) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) >= {"detail", "errors"}
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], dict)
    if field is not None:
        assert field in body["errors"], body
        assert body["errors"][field] and all(isinstance(m, str) and m for m in body["errors"][field])
    return body


def raw(api, method: str, path: str, body: str | bytes, content_type: str = "application/json"):
    return getattr(api, method)(path, data=body, content_type=content_type)


# --- Malformed bodies ----------------------------------------------------------------------------------

MALFORMED = ['{"user": "viewer",', "{'user': 'viewer'}", "not json", '{"user": NaN}']


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_json_to_add_member_is_a_400(body, people, api_as):
    api = api_as(people["admin"])
    snapshot = state()

    response = raw(api, "post", MEMBERS, body)

    assert_error_body(response, 400)
    assert "JSON" in response.json()["detail"]
    assert state() == snapshot


@pytest.mark.parametrize(("persona", "method", "path"), [
    ("staff", "post", "/api/v1/projects/"),
    ("viewer", "post", "/api/v1/tokens/"),
    ("admin", "patch", f"{MEMBERS}viewer/"),
    ("admin", "patch", MEMBERS),
    ("admin", "delete", MEMBERS),
    (None, "post", "/api/v1/auth/token/"),
])
def test_malformed_json_is_a_400_on_every_endpoint_that_reads_a_body(persona, method, path, people, api_as):
    api = api_as(people[persona]) if persona else APIClient()
    snapshot = state()

    response = raw(api, method, path, b'{"name": ')

    assert_error_body(response, 400)
    assert state() == snapshot


def test_bytes_that_are_not_utf8_are_a_400(people, api_as):
    api = api_as(people["admin"])
    snapshot = state()
    assert_error_body(raw(api, "post", MEMBERS, b"\xff\xfe\x00{"), 400)
    assert state() == snapshot


def test_a_json_list_where_an_object_is_expected_is_a_400(people, api_as):
    api = api_as(people["admin"])
    snapshot = state()
    body = assert_error_body(raw(api, "post", MEMBERS, '[{"user": "viewer"}]'), 400, field="non_field_errors")
    assert "Expected a dictionary" in body["detail"]
    assert state() == snapshot


def test_deeply_nested_json_is_a_400_not_a_crash(people, api_as):
    api = api_as(people["admin"])
    snapshot = state()
    body = assert_error_body(raw(api, "post", MEMBERS, "[" * 50_000 + "]" * 50_000), 400)
    assert "nested too deeply" in body["detail"]
    assert state() == snapshot


def test_too_many_form_fields_is_a_400_json(people, api_as, settings):
    api = api_as(people["admin"])
    snapshot = state()
    fields = "&".join(f"field{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))

    response = raw(api, "post", MEMBERS, fields, "application/x-www-form-urlencoded")

    assert_error_body(response, 400)
    assert "too many fields" in response.json()["detail"]
    assert state() == snapshot


def test_an_unsupported_content_type_is_a_415(people, api_as):
    api = api_as(people["admin"])
    snapshot = state()
    assert_error_body(raw(api, "post", MEMBERS, "<user>viewer</user>", "application/xml"), 415)
    assert state() == snapshot


# --- Oversized bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("persona", "path"), [
    ("admin", MEMBERS),
    ("viewer", "/api/v1/tokens/"),
    (None, "/api/v1/auth/token/"),
])
def test_a_json_body_over_the_upload_limit_is_a_413(persona, path, people, api_as, settings):
    api = api_as(people[persona]) if persona else APIClient()
    snapshot = state()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"user": "newcomer", "name": "big", "username": "viewer", "password": PASSWORD,
                       "padding": "x" * 5 * 1024})

    response = raw(api, "post", path, body)

    assert_error_body(response, 413)
    assert "too large" in response.json()["detail"]
    assert state() == snapshot


def test_a_form_encoded_body_over_the_upload_limit_is_a_413(people, api_as, settings):
    api = api_as(people["admin"])
    snapshot = state()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = api.post(MEMBERS, {"user": "viewer", "padding": "x" * 5 * 1024}, format="multipart")

    assert_error_body(response, 413)
    assert state() == snapshot


def test_a_body_under_the_limit_still_works(people, api_as, settings):
    User.objects.create_user("newcomer", password=PASSWORD)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api_as(people["admin"]).post(MEMBERS, {"user": "newcomer"}, format="json")
    assert response.status_code == 201


# --- Wrong fields ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("post", MEMBERS, {"user": "viewer", "role": "owner"}, "role"),
    ("post", MEMBERS, {"user": ["viewer"], "role": "viewer"}, "user"),
    ("post", MEMBERS, {"user": "newcomer", "role": 3}, "role"),
    ("post", MEMBERS, {"email": "not-an-address"}, "email"),
    ("post", MEMBERS, {}, "user"),
    ("patch", f"{MEMBERS}viewer/", {"role": "superuser"}, "role"),
    ("patch", f"{MEMBERS}viewer/", {"role": None}, "role"),
    ("patch", f"{MEMBERS}viewer/", {}, "role"),
    ("patch", MEMBERS, {"role": "admin"}, "user"),
    ("post", "/api/v1/tokens/", {"name": "x", "expires_at": "next tuesday"}, "expires_at"),
    ("post", "/api/v1/tokens/", {"name": "x", "project": "no-such-project"}, "project"),
    ("post", "/api/v1/tokens/", {"name": "x" * 101}, "name"),
    ("post", "/api/v1/tokens/", {"name": "   "}, "name"),
])
def test_wrong_field_values_are_a_400_naming_the_field(method, path, body, field, people, api_as):
    User.objects.create_user("newcomer", password=PASSWORD)
    api = api_as(people["admin"])
    snapshot = state()

    response = getattr(api, method)(path, body, format="json")

    assert_error_body(response, 400, field=field)
    assert state() == snapshot


@pytest.mark.parametrize(("body", "field"), [
    ({"username": {"name": "viewer"}, "password": PASSWORD}, "username"),
    ({"username": "viewer"}, "password"),
    ({"username": "viewer", "password": PASSWORD, "name": ["a"]}, "name"),
])
def test_wrong_fields_to_the_token_login_are_a_400_naming_the_field(body, field, people):
    snapshot = state()
    response = APIClient().post("/api/v1/auth/token/", body, format="json")
    assert_error_body(response, 400, field=field)
    assert state() == snapshot


@pytest.mark.parametrize(("body", "field"), [
    ({"slug": "Bad Slug!", "name": "Bad"}, "slug"),
    ({"slug": "-leading-hyphen", "name": "Bad"}, "slug"),
    ({"slug": "alpha", "name": "Duplicate"}, "slug"),
    ({"slug": "fine", "name": ""}, "name"),
    ({"slug": "fine", "name": "n" * 121}, "name"),
])
def test_a_project_with_an_invalid_slug_or_name_is_a_400_naming_the_field(body, field, people, api_as):
    api = api_as(people["staff"])
    snapshot = state()

    response = api.post("/api/v1/projects/", body, format="json")

    assert_error_body(response, 400, field=field)
    assert state() == snapshot


def test_an_unknown_filter_value_is_a_400_naming_the_parameter(people, api_as):
    response = api_as(people["viewer"]).get("/api/v1/jobs/?status=exploded")
    assert_error_body(response, 400, field="status")


# --- Unknown addresses, methods and credentials ------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/api/v1/nothing-here/",
    "/api/v1/projects/no-such-project/",
    "/api/v1/projects/no-such-project/members/",
    f"{MEMBERS}ghost/",
    "/api/v1/tokens/00000000-0000-0000-0000-000000000000/",
    "/api/v1/jobs/not-a-uuid/",
])
def test_unknown_api_addresses_are_a_404_json(path, people, api_as):
    assert_error_body(api_as(people["admin"]).get(path), 404)


def test_an_unknown_address_is_a_404_json_even_without_credentials(db):
    assert_error_body(APIClient().get("/api/v1/nothing-here/"), 404)


def test_patching_an_unknown_member_is_a_404_and_changes_nothing(people, api_as):
    api = api_as(people["admin"])
    snapshot = state()
    assert_error_body(api.patch(f"{MEMBERS}ghost/", {"role": "admin"}, format="json"), 404)
    assert state() == snapshot


def test_a_method_the_endpoint_does_not_support_is_a_405_json(people, api_as):
    api = api_as(people["admin"])
    snapshot = state()
    assert_error_body(api.put(f"{MEMBERS}viewer/", {"role": "admin"}, format="json"), 405)
    assert_error_body(api.get("/api/v1/auth/token/"), 405)
    assert state() == snapshot


@pytest.mark.parametrize("header", [None, "Token", "Token a b", "Bearer pt_something", "Token pt_unknown"])
def test_missing_or_broken_credentials_are_a_401_json(header, people):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    snapshot = state()

    for response in (client.get("/api/v1/projects/"),
                     client.post(MEMBERS, {"user": "viewer", "role": "admin"}, format="json")):
        assert_error_body(response, 401)
        assert response.has_header("WWW-Authenticate")
    assert state() == snapshot
