"""The endpoint × role matrix, generated from the URL resolver (so a new route cannot be missed) and checked against
the OpenAPI schema (so a route in one but not the other fails).

Generated here: every route as anonymous (401/403 for the API, a redirect to the login page for pages, never data,
never a 500), every route as an outsider (an admin of another project: 404 for this project's objects) and every
write as a viewer (never a success). Hand-written role tables with exact answers per persona are in
tests/accounts/test_permission_matrix.py; per-app negatives live next to each app's tests.

Also here or referenced: CSRF on session-authenticated writes, tokens that are revoked / expired / of another
project, lockout, self-approval, approving a changed artifact, racing decisions, deploying what may not be deployed.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apps.approvals import services as approvals
from apps.approvals.models import ApprovalRequest, Decision
from apps.core.models import Job
from apps.deployments.models import Deployment
from tests.security.test_api_abuse import ANSWERS, scene  # noqa: F401  (the shared fixture of objects)

# Routes anyone may open without signing in, each with why. Everything else must refuse an anonymous caller.
PUBLIC = {
    "accounts/login/": "the login page itself",
    "accounts/logout/": "logging out needs no session (POST; GET is refused)",
    "accounts/password/reset/": "password reset starts signed out",
    "accounts/password/reset/sent/": "password reset",
    "accounts/password/reset/{}/{}/": "password reset link (the token is the credential)",
    "accounts/password/reset/done/": "password reset",
    "oidc/authenticate/": "single sign-on starts signed out",
    "oidc/callback/": "the identity provider's redirect back",
    "healthz": "load balancer probe; answers only ok / not ok",
    "api/v1/auth/token/": "exchanging a password for a token (throttled, locked out like the login page)",
    "api/schema/": "the OpenAPI document: no data, and scripts need it before they have a token",
    "api/docs/": "Swagger UI for the schema above",
}

# Resolver routes that are not in the OpenAPI schema, each with why.
NOT_IN_SCHEMA = {
    "api/v1/": "DRF's browsable API root",
    "api/v1/deployments/{}/invocations": "MLflow's scoring protocol, a plain Django view documented in shared/API.md",
    "api/v1/deployments/{}/invocations/": "the same with a trailing slash",
}


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p


def _shape(route: str) -> str:
    """A route with every parameter as `{}`: `<slug:slug>`, `(?P<pk>[^/.]+)` and the schema's `{slug}` alike."""
    while "(?P<" in route:  # a regex group: up to its closing parenthesis (character classes hold none here)
        start = route.index("(?P<")
        depth, end = 0, start
        for end in range(start, len(route)):
            depth += {"(": 1, ")": -1}.get(route[end], 0)
            if depth == 0:
                break
        route = route[:start] + "{}" + route[end + 1:]
    route = re.sub(r"<(?:[^>:]+:)?[^>]+>", "{}", route)
    route = re.sub(r"\{[^}]*\}", "{}", route)
    return route.replace("^", "").replace("$", "").replace("\\", "")


def routes() -> list[tuple[str, URLPattern]]:
    found = {}
    for route, pattern in _walk(get_resolver().url_patterns):
        if route.startswith("admin/") or "(?P<format>" in route or "<drf_format_suffix:" in route:
            continue  # Django's admin has its own staff-only login; format suffixes repeat a route
        found.setdefault(_shape(route), (route, pattern))
    return sorted(found.values(), key=lambda r: r[0])


ROUTES = routes()


def fill(route: str, scene) -> str:  # noqa: F811
    """A concrete URL for a route, its parameters filled from the scene's objects (a random UUID where no object
    of that kind exists: every caller below must get a refusal either way)."""
    version, deployment = scene["version"], scene["deployment"]
    shape = _shape(route)
    parts = shape.split("{}")
    values = []
    for before in parts[:-1]:
        tail = before.rstrip("/").split("/")[-1]
        whole = "".join(parts[: len(values) + 1])
        if tail in ("projects",):
            values.append("alpha")
        elif tail == "models" and "model-versions" not in whole:
            values.append(scene["model"].slug)
        elif tail in ("model-versions",):
            values.append(str(version.uuid))
        elif tail == "deployments":
            values.append(deployment.slug)
        elif tail == "datasets":
            values.append(str(scene["dataset"].uuid))
        elif tail in ("versions", "v"):
            values.append("1")
        elif tail == "environments":
            values.append(str(scene["staging"].uuid) if "api/" in whole else scene["staging"].slug)
        elif tail == "approvals":
            values.append(str(scene["approval"].uuid))
        elif tail == "alert-rules":
            values.append(str(scene["rule"].uuid))
        elif tail == "jobs":
            values.append(str(scene["job"].id))
        elif tail in ("members", "users"):
            values.append("viewer")
        elif tail == "docs":
            values.append("quick-start")
        elif tail == "imports":
            values.append(str(uuid.uuid4()))
        else:
            values.append(str(uuid.uuid4()))
    url = "".join(p + v for p, v in zip(parts, [*values, ""], strict=True))
    return "/" + url


@pytest.fixture
def matrix(scene, people, project):  # noqa: F811
    scene["approval"] = approvals.request_approval(scene["version"], scene["staging"], actor=people["scientist"],
                                                   justification="Ready", answers=ANSWERS)
    scene["job"] = Job.objects.create(kind="system_check", created_by=people["admin"], project=project)
    return scene


def _is_api(route: str) -> bool:
    return route.startswith("api/")


def _route_ids():
    return [_shape(r) or "/" for r, _ in ROUTES]


# --- Schema and resolver agree ----------


def test_every_api_route_is_in_the_openapi_schema_and_back(people, api_as):
    schema = api_as(people["viewer"]).get("/api/schema/?format=json")
    assert schema.status_code == 200
    in_schema = {_shape(path.lstrip("/")) for path in schema.json()["paths"]}
    in_resolver = {_shape(route) for route, _ in ROUTES if route.startswith("api/v1/")}
    assert in_resolver - in_schema == set(NOT_IN_SCHEMA), "routes the schema does not document"
    assert in_schema - in_resolver == set(), "schema paths no route serves"


def test_the_public_allow_list_names_real_routes():
    shapes = {_shape(route) for route, _ in ROUTES}
    assert set(PUBLIC) <= shapes, set(PUBLIC) - shapes


# --- Anonymous ----------


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("route", "pattern"), ROUTES, ids=_route_ids())
def test_anonymous_callers_are_refused_everywhere_but_the_public_routes(route, pattern, method, matrix):
    url = fill(route, matrix)
    client = APIClient() if _is_api(route) else Client()
    response = getattr(client, method)(url)
    assert response.status_code < 500, f"{method.upper()} {url}: {response.status_code}"
    if _shape(route) in PUBLIC:
        return
    if _is_api(route):
        assert response.status_code in (401, 403, 404, 405), f"{method.upper()} {url}: {response.status_code}"
        if response.status_code != 404:
            assert response["Content-Type"].startswith("application/json")
    else:
        assert response.status_code in (302, 404, 405), f"{method.upper()} {url}: {response.status_code}"
        if response.status_code == 302:
            assert response["Location"].startswith("/accounts/login/"), response["Location"]


# --- Outsider (an admin of another project) ----------


def _project_object_route(route: str) -> bool:
    """Routes that name one of project alpha's objects (not lists, not the caller's own things)."""
    shape = _shape(route)
    if "{}" not in shape or shape in PUBLIC:
        return False
    own = ("notifications/", "account/tokens/", "api/v1/tokens/", "jobs/", "imports/", "help/", "sso/",
           "api/v1/alerts/", "alerts/", "retraining-runs/", "api/v1/audit/events/", "api/v1/{}")
    return not any(shape.startswith(prefix) or shape.startswith("api/v1/" + prefix) for prefix in own)


OBJECT_ROUTES = [(r, p) for r, p in ROUTES if _project_object_route(r)]


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("route", "pattern"), OBJECT_ROUTES, ids=[_shape(r) for r, _ in OBJECT_ROUTES])
def test_an_outsider_gets_404_for_this_projects_objects(route, pattern, method, matrix, people, api_as, client_as):
    url = fill(route, matrix)
    client = api_as(people["outsider"]) if _is_api(route) else client_as(people["outsider"])
    response = getattr(client, method)(url)
    if route.startswith("users/") or route.startswith("api/v1/^users/"):
        assert response.status_code in (403, 404, 405)  # users are site-wide: the outsider is not their admin
    else:
        assert response.status_code in (404, 405), f"{method.upper()} {url}: {response.status_code}"


# --- Viewer: no writes ----------

# Writes a viewer may make, with why.
VIEWER_WRITES = {
    "accounts/logout/", "accounts/login/", "api/v1/auth/token/", "accounts/password/change/",
    "accounts/password/reset/", "oidc/authenticate/", "oidc/callback/",
    "api/v1/tokens/", "account/tokens/",                                   # their own API tokens
    "api/v1/notifications/read-all/", "notifications/read-all/",          # their own notifications
    "api/v1/guidance/tour/dismiss/", "help/tour/dismiss/", "help/tour/restart/",  # their own tour
    "projects/switch/",                                                    # which project they look at
    "api/v1/jobs/system-check/", "jobs/system-check/",                     # read-only checks, any signed-in user
    "api/v1/deployments/{}/invocations", "api/v1/deployments/{}/invocations/",  # viewers try predictions
    "api/v1/model-versions/{}/predict/", "models/{}/v{}/try/",             # the model card's "try it"
    "api/v1/models/{}/follow/",                                            # following a model's news
}


@pytest.mark.parametrize(("route", "pattern"), ROUTES, ids=_route_ids())
def test_a_viewer_cannot_write(route, pattern, matrix, people, api_as, client_as):
    shape = _shape(route)
    if shape in VIEWER_WRITES or shape in PUBLIC or shape == "datasets/{}/v{}/rows/":  # rows: the scene has no file
        return
    url = fill(route, matrix)
    client = api_as(people["viewer"]) if _is_api(route) else client_as(people["viewer"])
    before = Deployment.objects.values_list("status", "champion_id", "generation").first()
    for method in ("post", "patch", "delete"):
        response = getattr(client, method)(url, {}, content_type="application/json") if _is_api(route) \
            else getattr(client, method)(url)
        assert response.status_code < 500, f"{method.upper()} {url}: {response.status_code}"
        # Pages that only read may answer a POST with the page itself; what matters there is that nothing changed.
        assert not _is_api(route) or response.status_code in (400, 403, 404, 405, 415), (
            f"viewer {method.upper()} {url}: {response.status_code} {response.content[:200]!r}")
    assert Deployment.objects.values_list("status", "champion_id", "generation").first() == before
    # Regression: PATCH /api/v1/deployments/<slug>/ with an empty body answered a viewer 200 (no check before the
    # per-field services); apps/deployments/api.py now asks the policy first.


# --- CSRF ----------


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/tokens/", {"name": "stolen"}),
    ("/api/v1/approvals/{approval}/decisions/", {"verdict": "approve"}),
    ("/api/v1/deployments/churn-live/rollback/", {"reason": "x"}),
    ("/api/v1/projects/alpha/members/", {"user": "outsider", "role": "admin"}),
])
def test_session_authenticated_api_writes_need_the_csrf_token(path, body, matrix, people):
    """A logged-in browser tricked into posting cross-site must be refused; a token caller needs no CSRF token.
    (Invocations: tests/deployments/test_serving.py::test_a_browser_session_needs_its_csrf_token.)"""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(people["admin"])
    before = (Decision.objects.count(), people["admin"].api_tokens.count() if hasattr(people["admin"], "api_tokens")
              else None)
    response = browser.post(path.format(approval=matrix["approval"].uuid), body, content_type="application/json")
    assert response.status_code == 403, response.content[:200]
    assert "CSRF" in response.json()["detail"]
    assert (Decision.objects.count(), before[1]) == before


@pytest.mark.parametrize("path", ["/projects/alpha/members/", "/account/tokens/", "/jobs/system-check/",
                                  "/projects/alpha/environments/new/"])
def test_session_page_posts_need_the_csrf_token(path, people):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(people["admin"])
    assert browser.post(path, {"name": "x", "user": "outsider", "role": "admin"}).status_code == 403


# --- Tokens, lockout, separation of duties: where they are tested ----------
# revoked API token: tests/accounts/test_tokens.py; expired: test_tokens.py::test_an_expired_token_is_refused_saying_so;
# project-scoped token: tests/accounts/test_permission_matrix.py::test_project_scoped_token_cannot_reach_other_projects;
# revoked deployment token: tests/deployments/test_serving.py::test_a_revoked_token_stops_at_once;
# lockout: tests/accounts/test_login.py (page and token endpoint);
# self-approval: tests/approvals/test_workflow.py::test_self_approval_is_refused_and_audited;
# changed artifact: tests/approvals/test_workflow.py::test_an_artifact_change_voids_the_request_and_the_approval;
# quarantined version: tests/deployments/test_deploy.py::test_a_quarantined_version_cannot_be_deployed.


def test_racing_decisions_end_with_one_consistent_outcome(matrix, people, api_as):
    """Two approvers answer the same one-approval request through the API, one after the other: one decision closes
    it; the second is refused. The truly concurrent race (two threads, two database connections, the service's row
    lock on PostgreSQL) is tests/approvals/test_workflow.py::test_two_racing_final_approvals_cannot_both_finalise."""
    from apps.accounts.models import Membership
    from tests.conftest import make_user

    second = make_user("approver2")
    Membership.objects.create(user=second, project=matrix["staging"].project, role="approver")
    path = f"/api/v1/approvals/{matrix['approval'].uuid}/decisions/"
    first = api_as(people["approver"]).post(path, {"verdict": "approve", "comment": "ok"}, format="json")
    late = api_as(second).post(path, {"verdict": "reject", "comment": "no"}, format="json")
    assert first.status_code in (200, 201), first.content[:300]
    assert late.status_code in (400, 409), late.content[:300]
    request = ApprovalRequest.objects.get(pk=matrix["approval"].pk)
    assert request.status == ApprovalRequest.Status.APPROVED
    assert list(request.decisions.values_list("verdict", flat=True)) == ["approve"]


def test_an_unapproved_version_cannot_be_deployed_to_a_gated_environment(matrix, people, api_as):
    response = api_as(people["admin"]).post("/api/v1/deployments/", {
        "project": "alpha", "name": "Sneaky", "environment": "staging",
        "model_version": str(matrix["version"].uuid)}, format="json")
    assert response.status_code in (400, 403, 409), response.content[:300]
    assert not Deployment.objects.filter(name="Sneaky").exists()
