"""Deploying through the API: the approval rule (409 with the reason), fallback, rollback, challengers, history."""

from __future__ import annotations

import pytest

from apps.approvals.models import ApprovalRequest
from apps.audit.models import AuditEvent
from apps.deployments import services
from apps.deployments.models import Deployment, DeploymentEvent
from apps.registry.models import ModelVersion
from tests.deployments.conftest import approve


def create(client, version, environment, name="Churn scoring"):
    return client.post("/api/v1/deployments/", {"project": "alpha", "name": name, "environment": environment.slug,
                                                "model_version": str(version.uuid)}, format="json")


def test_deploying_to_a_gated_environment_needs_its_approval(people, version, production, api_as):
    client = api_as(people["scientist"])
    refused = create(client, version, production)
    assert refused.status_code == 409
    assert "not approved for production" in refused.json()["detail"]
    assert "model_version" in refused.json()["errors"]
    approve(version, production, people)
    created = create(client, version, production)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["champion"]["number"] == 1 and body["fallback"] is None and body["status"] == "active"
    assert body["invocations_url"].endswith(f"/api/v1/deployments/{body['slug']}/invocations")
    assert AuditEvent.objects.filter(action="deployment.create").count() == 1


def test_an_approval_bound_to_another_file_no_longer_counts(people, version, production, api_as):
    approve(version, production, people)
    ModelVersion.objects.filter(pk=version.pk).update(sha256="f" * 64)  # the file changed under the approval
    refused = create(api_as(people["scientist"]), version, production)
    assert refused.status_code == 409 and "SHA-256" in refused.json()["detail"]


def test_a_quarantined_version_cannot_be_deployed(people, version, sandbox, api_as):
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUARANTINED)
    refused = create(api_as(people["scientist"]), version, sandbox)
    assert refused.status_code == 409 and "quarantined" in refused.json()["detail"]


def test_expired_approval_is_refused_with_its_reason(people, version, production, api_as):
    request = approve(version, production, people)
    ApprovalRequest.objects.filter(pk=request.pk).update(status=ApprovalRequest.Status.EXPIRED)
    refused = create(api_as(people["scientist"]), version, production)
    assert refused.status_code == 409 and "not approved" in refused.json()["detail"]


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("approver", 403), ("scientist", 201), ("admin", 201),
                                              ("outsider", 400)])
def test_who_may_deploy(people, version, sandbox, api_as, role, status):
    response = create(api_as(people[role]), version, sandbox)
    assert response.status_code == status, response.content
    if status == 400:
        assert "project" in response.json()["errors"]


def test_bad_requests_name_the_field(people, version, sandbox, api_as):
    client = api_as(people["scientist"])
    assert "environment" in client.post("/api/v1/deployments/", {
        "project": "alpha", "name": "x", "environment": "nope", "model_version": str(version.uuid)},
        format="json").json()["errors"]
    assert "model_version" in client.post("/api/v1/deployments/", {
        "project": "alpha", "name": "x", "environment": sandbox.slug, "model_version": "not-a-uuid"},
        format="json").json()["errors"]
    assert create(client, version, sandbox).status_code == 201
    again = create(client, version, sandbox)
    assert again.status_code == 400 and "name" in again.json()["errors"]


def test_promote_keeps_a_fallback_and_rollback_switches_back(people, version, version2, sandbox, api_as):
    client = api_as(people["scientist"])
    slug = create(client, version, sandbox).json()["slug"]
    promoted = client.patch(f"/api/v1/deployments/{slug}/", {"model_version": str(version2.uuid),
                                                             "reason": "better recall"}, format="json")
    assert promoted.status_code == 200, promoted.content
    assert promoted.json()["champion"]["number"] == 2 and promoted.json()["fallback"]["number"] == 1
    no_reason = api_as(people["admin"]).post(f"/api/v1/deployments/{slug}/rollback/", {}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["errors"]
    viewer = api_as(people["viewer"]).post(f"/api/v1/deployments/{slug}/rollback/", {"reason": "x"}, format="json")
    assert viewer.status_code == 403
    rolled = api_as(people["admin"]).post(f"/api/v1/deployments/{slug}/rollback/", {"reason": "v2 misbehaves"},
                                          format="json")
    assert rolled.status_code == 200
    assert rolled.json()["champion"]["number"] == 1 and rolled.json()["fallback"]["number"] == 2
    event = AuditEvent.objects.get(action="deployment.rollback")
    assert event.details["reason"] == "v2 misbehaves" and event.actor == people["admin"]
    history = client.get(f"/api/v1/deployments/{slug}/history/").json()["results"]
    assert [e["kind"] for e in history] == ["rolled_back", "promoted", "deployed"]
    assert history[0]["actor"] == "admin" and history[0]["reason"] == "v2 misbehaves"
    live = services.history(Deployment.objects.get(slug=slug))
    assert [(row["version"].number, row["live"]) for row in live] == [(1, True), (2, False), (1, False)]


def test_rollback_without_a_fallback_is_409(people, version, sandbox, api_as):
    slug = create(api_as(people["scientist"]), version, sandbox).json()["slug"]
    response = api_as(people["admin"]).post(f"/api/v1/deployments/{slug}/rollback/", {"reason": "x"}, format="json")
    assert response.status_code == 409 and "no fallback" in response.json()["detail"]


def test_challenger_settings_are_validated(people, version, version2, sandbox, production, api_as):
    client = api_as(people["scientist"])
    slug = create(client, version, sandbox).json()["slug"]
    url = f"/api/v1/deployments/{slug}/"
    assert "challenger_share" in client.patch(url, {"challenger": str(version2.uuid), "challenger_mode": "canary",
                                                    "challenger_share": 0}, format="json").json()["errors"]
    assert "challenger_mode" in client.patch(url, {"challenger": str(version2.uuid)}, format="json").json()["errors"]
    assert "challenger" in client.patch(url, {"challenger": str(version.uuid), "challenger_mode": "shadow"},
                                        format="json").json()["errors"]
    response = client.patch(url, {"challenger": str(version2.uuid), "challenger_mode": "canary",
                                  "challenger_share": 10}, format="json")
    assert response.status_code == 200 and response.json()["challenger"]["number"] == 2
    assert response.json()["challenger_share"] == 10
    response = client.patch(url, {"challenger_share": 25}, format="json")
    assert response.json()["challenger_share"] == 25
    assert client.patch(url, {"challenger_share": 101}, format="json").status_code == 400
    response = client.patch(url, {"challenger": None}, format="json")
    assert response.json()["challenger"] is None and response.json()["challenger_mode"] == ""


def test_a_challenger_must_be_approved_for_the_environment_too(people, version, version2, production, api_as):
    approve(version, production, people)
    client = api_as(people["scientist"])
    slug = create(client, version, production).json()["slug"]
    response = client.patch(f"/api/v1/deployments/{slug}/", {"challenger": str(version2.uuid),
                                                             "challenger_mode": "shadow"}, format="json")
    assert response.status_code == 409 and "not approved" in response.json()["detail"]


def test_limits_and_stop_resume(people, version, sandbox, api_as, settings):
    client = api_as(people["scientist"])
    slug = create(client, version, sandbox).json()["slug"]
    url = f"/api/v1/deployments/{slug}/"
    body = client.patch(url, {"max_rows": 50, "rate_limit_per_minute": 100}, format="json").json()
    assert body["effective_max_rows"] == 50 and body["effective_rate_limit_per_minute"] == 100
    too_many = client.patch(url, {"max_rows": settings.PORTAL_SERVING_MAX_ROWS + 1}, format="json")
    assert too_many.status_code == 400 and "max_rows" in too_many.json()["errors"]
    assert client.patch(url, {"max_rows": -1}, format="json").status_code == 400
    assert client.patch(url, {"status": "stopped", "reason": "pause"}, format="json").json()["status"] == "stopped"
    assert client.patch(url, {"status": "active"}, format="json").json()["status"] == "active"
    assert api_as(people["viewer"]).patch(url, {"max_rows": 5}, format="json").status_code == 403
    kinds = list(DeploymentEvent.objects.filter(deployment__slug=slug).values_list("kind", flat=True))
    assert kinds.count("settings") == 1 and "stopped" in kinds and "resumed" in kinds


def test_lists_and_details_are_scoped(people, project, other_project, version, sandbox, api_as):
    from apps.accounts.models import Membership

    client = api_as(people["scientist"])
    slug = create(client, version, sandbox).json()["slug"]
    assert api_as(people["viewer"]).get("/api/v1/deployments/").json()["count"] == 1
    assert api_as(people["outsider"]).get("/api/v1/deployments/").json()["count"] == 0
    assert api_as(people["outsider"]).get(f"/api/v1/deployments/{slug}/").status_code == 404
    Membership.objects.create(user=people["viewer"], project=other_project, role="viewer")
    scoped = api_as(people["viewer"], project=other_project)
    assert scoped.get(f"/api/v1/deployments/{slug}/").status_code == 404
    assert api_as(people["viewer"]).get("/api/v1/deployments/?status=nope").status_code == 400


def test_deployment_tokens_api(people, version, sandbox, api_as):
    client = api_as(people["scientist"])
    slug = create(client, version, sandbox).json()["slug"]
    made = client.post(f"/api/v1/deployments/{slug}/tokens/", {"name": "call centre"}, format="json")
    assert made.status_code == 201 and made.json()["key"].startswith("pd_")
    listed = client.get(f"/api/v1/deployments/{slug}/tokens/").json()["results"]
    assert listed[0]["name"] == "call centre" and "key" not in listed[0]
    assert api_as(people["viewer"]).get(f"/api/v1/deployments/{slug}/tokens/").status_code == 403
    assert client.post(f"/api/v1/deployments/{slug}/tokens/", {"name": " "}, format="json").status_code == 400
    revoked = client.post(f"/api/v1/deployments/{slug}/tokens/{made.json()['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"


def test_final_approval_deploys_when_the_environment_says_so(people, project, version, version2, production,
                                                             django_capture_on_commit_callbacks):
    from apps.approvals import services as approvals

    approvals.update_environment(production, actor=people["admin"], auto_deploy=True)
    with django_capture_on_commit_callbacks(execute=True):
        approve(version, production, people)
    deployment = Deployment.objects.get(environment=production)
    assert deployment.champion == version and deployment.events.get().actor_label == "auto-deploy after approval"
    with django_capture_on_commit_callbacks(execute=True):
        approve(version2, production, people)
    deployment.refresh_from_db()
    assert deployment.champion == version2 and deployment.fallback == version
    assert Deployment.objects.filter(environment=production).count() == 1


def test_auto_deploy_of_an_unservable_version_is_recorded_not_raised(people, version, production,
                                                                     django_capture_on_commit_callbacks):
    from apps.approvals import services as approvals

    approvals.update_environment(production, actor=people["admin"], auto_deploy=True)
    request = approvals.request_approval(version, production, actor=people["scientist"], justification="Ready",
                                         answers={"intended_use": "x", "affected_people": "y",
                                                  "fairness_checked": True, "fallback_plan": "z"})
    ModelVersion.objects.filter(pk=version.pk).update(mlflow_model_uri="")  # no longer servable
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(request, actor=people["approver"], verdict="approve", comment="ok")
    assert not Deployment.objects.exists()
    assert AuditEvent.objects.filter(action="deployment.auto_deploy_refused").exists()


def test_the_version_comparison_says_where_each_version_serves(people, version, version2, sandbox, api_as):
    client = api_as(people["scientist"])
    slug = create(client, version, sandbox).json()["slug"]
    compared = client.get(f"/api/v1/models/{version.model.slug}/compare/?versions=1,2").json()
    assert compared["versions"][0]["deployed_in"] == [{"deployment": slug, "environment": "sandbox",
                                                       "role": "champion"}]
    assert compared["versions"][1]["deployed_in"] == []


def test_a_deployment_called_new_does_not_hide_behind_the_deploy_form(people, project, version, sandbox):
    deployment = services.deploy(project, actor=people["scientist"], name="New", environment=sandbox, version=version)
    assert deployment.slug == "new-deployment"
