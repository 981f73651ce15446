"""Role × endpoint: every page and API endpoint answers 200/403/404 as the policy says.

Personas: members of project "alpha" by role, an `outsider` (admin of another project), site `staff`,
and an anonymous visitor. Outsiders get 404 for alpha's objects, members without the action 403.
"""

from __future__ import annotations

import json

import pytest

from apps.accounts.models import Membership
from apps.core.models import Job
from tests.conftest import make_user

PERSONAS = ["viewer", "scientist", "approver", "admin", "outsider", "staff", "anonymous"]

# (name, method, path, body, {persona: expected status}); "*" is the default for unnamed personas.
PAGES = [
    ("home", "get", "/", None, {"*": 200, "anonymous": 302}),
    ("project list", "get", "/projects/", None, {"*": 200, "anonymous": 302}),
    ("project page", "get", "/projects/alpha/", None, {"*": 200, "outsider": 404, "anonymous": 302}),
    ("unknown project", "get", "/projects/nope/", None, {"*": 404, "anonymous": 302}),
    ("members page", "get", "/projects/alpha/members/", None,
     {"*": 403, "admin": 200, "staff": 200, "outsider": 404, "anonymous": 302}),
    ("add member", "post", "/projects/alpha/members/", {"user": "newcomer", "role": "viewer"},
     {"*": 403, "admin": 302, "staff": 302, "outsider": 404, "anonymous": 302}),
    ("change role", "post", "/projects/alpha/members/viewer/role/", {"viewer-role": "scientist"},
     {"*": 403, "admin": 302, "staff": 302, "outsider": 404, "anonymous": 302}),
    ("remove member (confirm)", "get", "/projects/alpha/members/viewer/remove/", None,
     {"*": 403, "admin": 200, "staff": 200, "outsider": 404, "anonymous": 302}),
    ("remove member", "post", "/projects/alpha/members/viewer/remove/", {},
     {"*": 403, "admin": 302, "staff": 302, "outsider": 404, "anonymous": 302}),
    ("deactivate user (confirm)", "get", "/users/scientist/deactivate/", None,
     {"*": 403, "admin": 200, "staff": 200, "outsider": 404, "anonymous": 302}),
    ("deactivate user", "post", "/users/scientist/deactivate/", {},
     {"*": 403, "admin": 302, "staff": 302, "outsider": 404, "anonymous": 302}),
    ("new project page", "get", "/projects/new/", None, {"*": 403, "staff": 200, "anonymous": 302}),
    ("audit page", "get", "/audit/", None, {"*": 200, "anonymous": 302}),
    ("audit csv", "get", "/audit/export.csv", None, {"*": 200, "anonymous": 302}),
    ("my jobs", "get", "/jobs/", None, {"*": 200, "anonymous": 302}),
    ("admin's job", "get", "/jobs/{job}/", None, {"*": 404, "admin": 200, "staff": 200, "anonymous": 302}),
    ("tokens page", "get", "/account/tokens/", None, {"*": 200, "anonymous": 302}),
]

API = [
    ("projects", "get", "/api/v1/projects/", None, {"*": 200, "anonymous": 401}),
    ("project", "get", "/api/v1/projects/alpha/", None, {"*": 200, "outsider": 404, "anonymous": 401}),
    ("create project", "post", "/api/v1/projects/", {"slug": "gamma", "name": "Gamma"},
     {"*": 403, "staff": 201, "anonymous": 401}),
    ("members", "get", "/api/v1/projects/alpha/members/", None, {"*": 200, "outsider": 404, "anonymous": 401}),
    ("add member", "post", "/api/v1/projects/alpha/members/", {"user": "newcomer", "role": "viewer"},
     {"*": 403, "admin": 201, "staff": 201, "outsider": 404, "anonymous": 401}),
    ("change role", "patch", "/api/v1/projects/alpha/members/viewer/", {"role": "scientist"},
     {"*": 403, "admin": 200, "staff": 200, "outsider": 404, "anonymous": 401}),
    ("change role by body", "patch", "/api/v1/projects/alpha/members/", {"user": "viewer", "role": "scientist"},
     {"*": 403, "admin": 200, "staff": 200, "outsider": 404, "anonymous": 401}),
    ("remove member", "delete", "/api/v1/projects/alpha/members/viewer/", None,
     {"*": 403, "admin": 204, "staff": 204, "outsider": 404, "anonymous": 401}),
    ("remove member by body", "delete", "/api/v1/projects/alpha/members/", {"user": "viewer"},
     {"*": 403, "admin": 204, "staff": 204, "outsider": 404, "anonymous": 401}),
    ("deactivate user", "post", "/api/v1/users/scientist/deactivate/", {},
     {"*": 403, "admin": 200, "staff": 200, "outsider": 404, "anonymous": 401}),
    ("audit events", "get", "/api/v1/audit/events/", None, {"*": 200, "anonymous": 401}),
    ("audit verify", "get", "/api/v1/audit/verify/", None,
     {"*": 403, "admin": 200, "approver": 200, "staff": 200, "outsider": 200, "anonymous": 401}),
    ("jobs", "get", "/api/v1/jobs/", None, {"*": 200, "anonymous": 401}),
    ("admin's job", "get", "/api/v1/jobs/{job}/", None, {"*": 404, "admin": 200, "staff": 200, "anonymous": 401}),
    ("start system check", "post", "/api/v1/jobs/system-check/", {}, {"*": 202, "anonymous": 401}),
    ("tokens", "get", "/api/v1/tokens/", None, {"*": 200, "anonymous": 401}),
]


@pytest.fixture
def scene(people):
    make_user("newcomer")
    job = Job.objects.create(kind="system_check", created_by=people["admin"])
    return {"job": job.id}


def _expected(table: dict, persona: str) -> int:
    return table.get(persona, table["*"])


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("name", "method", "path", "body", "expected"), PAGES, ids=[p[0] for p in PAGES])
def test_page_permissions(persona, name, method, path, body, expected, people, scene, client, client_as):
    browser = client if persona == "anonymous" else client_as(people[persona])
    response = getattr(browser, method)(path.format(**scene), body or {})
    assert response.status_code == _expected(expected, persona), f"{persona} {method.upper()} {path}"
    if response.status_code == 302 and persona == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("name", "method", "path", "body", "expected"), API, ids=[a[0] for a in API])
def test_api_permissions(persona, name, method, path, body, expected, people, scene, api_as):
    from rest_framework.test import APIClient

    api = APIClient() if persona == "anonymous" else api_as(people[persona])
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    response = getattr(api, method)(path.format(**scene), **kwargs)
    assert response.status_code == _expected(expected, persona), (
        f"{persona} {method.upper()} {path}: {response.content[:300]!r}")
    if response.status_code >= 400:
        assert "detail" in response.json(), "API errors carry a JSON body with `detail`"


def test_project_scoped_token_cannot_reach_other_projects(people, other_project, api_as):
    Membership.objects.create(user=people["admin"], project=other_project, role="viewer")
    scoped = api_as(people["admin"], project=other_project)
    assert scoped.get("/api/v1/projects/alpha/").status_code == 404
    assert scoped.get("/api/v1/projects/alpha/members/").status_code == 404
    assert [p["slug"] for p in scoped.get("/api/v1/projects/").json()["results"]] == ["beta"]
    assert scoped.get("/api/v1/projects/beta/").status_code == 200
