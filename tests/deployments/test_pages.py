"""The deployment pages: list, deploy form, a deployment's page and its change forms, the card section, the packet."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.deployments import services
from apps.deployments.models import Deployment, DeploymentEvent, DeploymentToken, PredictionLog
from apps.deployments.views.pages import live_figure, live_stats
from tests.deployments.conftest import approve

pytestmark = pytest.mark.django_db


def deploy(project, people, environment, version, name="Churn scoring") -> Deployment:
    return services.deploy(project, actor=people["scientist"], name=name, environment=environment, version=version)


def log(deployment, version, *, minutes_ago=1.0, latency=5.0, status=200, role="champion") -> PredictionLog:
    return PredictionLog.objects.create(
        record_id=uuid.uuid4(), request_id=uuid.uuid4().hex, deployment=deployment, model_version=version,
        role=role, created_at=timezone.now() - timedelta(minutes=minutes_ago), latency_ms=latency,
        status_code=status, row_count=1)


# --- The list ------------------------------------------------------------------------------------------------


def test_list_shows_what_each_person_may_see_with_filters(people, project, version, sandbox, client_as):
    empty = client_as(people["viewer"]).get("/deployments/").content.decode()
    assert 'id="deployments-empty"' in empty and "Press <strong>Deploy</strong>" in empty
    deployment = deploy(project, people, sandbox, version)
    log(deployment, version)
    log(deployment, version, minutes_ago=90)  # older than an hour: not counted
    page = client_as(people["viewer"]).get("/deployments/")
    assert [d.slug for d in page.context["page"]] == ["churn-scoring"]
    assert page.context["page"][0].last_hour == 1
    assert client_as(people["viewer"]).get("/deployments/?status=stopped").context["page"].paginator.count == 0
    filtered = client_as(people["viewer"]).get("/deployments/?environment=other").content.decode()
    assert "No deployment matches these filters." in filtered
    assert client_as(people["viewer"]).get("/deployments/?project=alpha&environment=sandbox").context[
        "page"].paginator.count == 1
    assert client_as(people["outsider"]).get("/deployments/").context["page"].paginator.count == 0


def test_list_query_count_does_not_grow_with_rows(people, project, version, sandbox, client_as):
    deploy(project, people, sandbox, version, name="One")
    client = client_as(people["viewer"])
    client.get("/deployments/")  # a session's first request also stamps it for the idle timeout
    with CaptureQueriesContext(connection) as one:
        client.get("/deployments/")
    for n in range(4):
        deploy(project, people, sandbox, version, name=f"More {n}")
    with CaptureQueriesContext(connection) as five:
        assert client.get("/deployments/").status_code == 200
    assert len(five) == len(one)


# --- Deploy form ---------------------------------------------------------------------------------------------


def test_deploy_form_says_per_environment_whether_the_version_may_serve(people, version, sandbox, production,
                                                                         client_as):
    url = f"/deployments/new/?version={version.uuid}"
    page = client_as(people["scientist"]).get(url)
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-environment="sandbox" data-may-serve="yes"' in html
    assert 'data-environment="production" data-may-serve="no"' in html
    assert "is not approved for production" in html and "Request approval for production" in html
    assert page.context["form"].initial["name"] == "Churn (sandbox)"
    assert client_as(people["viewer"]).get(url).status_code == 403
    assert client_as(people["outsider"]).get(url).status_code == 404
    assert client_as(people["scientist"]).get("/deployments/new/?version=nonsense").status_code == 404
    assert "Deploy from a model card" in client_as(people["scientist"]).get("/deployments/new/").content.decode()


def test_scientist_deploys_through_the_form(people, project, version, sandbox, client_as):
    response = client_as(people["scientist"]).post("/deployments/new/", {
        "version": str(version.uuid), "environment": "sandbox", "target": "new", "name": "Churn (sandbox)"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/deployments/{deployment.slug}/"
    assert deployment.champion == version and deployment.created_by == people["scientist"]
    empty_name = client_as(people["scientist"]).post("/deployments/new/", {
        "version": str(version.uuid), "environment": "sandbox", "target": "new", "name": ""})
    assert empty_name.status_code == 400 and "Give the new deployment a name." in empty_name.content.decode()
    duplicate = client_as(people["scientist"]).post("/deployments/new/", {
        "version": str(version.uuid), "environment": "sandbox", "target": "new", "name": "Churn (sandbox)"})
    assert duplicate.status_code == 400 and "already has a deployment called" in duplicate.content.decode()


def test_refused_deploy_shows_the_reason(people, version, production, client_as):
    response = client_as(people["scientist"]).post("/deployments/new/", {
        "version": str(version.uuid), "environment": "production", "target": "new", "name": "Churn (production)"})
    html = response.content.decode()
    assert response.status_code == 409
    assert 'id="deploy-refused"' in html and "is not approved for production" in html
    assert not Deployment.objects.exists()


def test_deploying_a_second_version_into_a_deployment_promotes_it(people, project, version, version2, production,
                                                                   client_as):
    approve(version, production, people)
    approve(version2, production, people)
    deployment = deploy(project, people, production, version)
    form = client_as(people["scientist"]).get(f"/deployments/new/?version={version2.uuid}")
    assert form.context["form"].initial["target"] == deployment.slug  # the model already runs there
    response = client_as(people["scientist"]).post("/deployments/new/", {
        "version": str(version2.uuid), "environment": "production", "target": deployment.slug,
        "reason": "Better recall"}, follow=True)
    deployment.refresh_from_db()
    assert deployment.champion == version2 and deployment.fallback == version
    assert "Churn v2 is now the champion of Churn scoring; Churn v1 is the fallback." in response.content.decode()
    assert deployment.events.first().reason == "Better recall"


def test_promoting_into_a_deployment_of_another_environment_is_refused(people, project, version, version2, sandbox,
                                                                      production, client_as):
    deployment = deploy(project, people, sandbox, version)
    approve(version2, production, people)
    response = client_as(people["scientist"]).post("/deployments/new/", {
        "version": str(version2.uuid), "environment": "production", "target": deployment.slug})
    assert response.status_code == 400 and "runs in sandbox" in response.content.decode()


# --- A deployment's page ------------------------------------------------------------------------------------


def test_page_for_each_role(people, project, version, sandbox, client_as):
    deployment = deploy(project, people, sandbox, version)
    url = f"/deployments/{deployment.slug}/"
    viewer = client_as(people["viewer"]).get(url)
    html = viewer.content.decode()
    assert viewer.status_code == 200
    invocations = f"http://testserver/api/v1/deployments/{deployment.slug}/invocations"
    assert f"curl -sS -X POST {invocations}" in html and f"{invocations!r}" in html.replace("&#x27;", "'")
    assert "$PORTAL_TOKEN" in html and 'id="try-form"' in html
    body = json.loads(viewer.context["snippets"]["body"])
    assert body["dataframe_split"]["columns"] == ["age", "income", "tenure"]
    assert all(isinstance(v, int | float) for v in body["dataframe_split"]["data"][0])
    assert 'data-role="champion"' in html and "No approval needed in sandbox" in html
    for form in ("/rollback/", "Create a token", "Save the settings", "Stop serving", "/challenger/"):
        assert form not in html, form
    assert 'id="manage"' not in html and 'id="tokens"' not in html and "Roll back" not in html
    scientist = client_as(people["scientist"]).get(url).content.decode()
    assert 'id="manage"' in scientist and 'id="tokens"' in scientist and 'id="no-fallback"' in scientist
    assert client_as(people["outsider"]).get(url).status_code == 404
    assert client_as(people["outsider"]).get(f"{url}live/").status_code == 404


def test_viewer_cannot_post_changes(people, project, version, sandbox, client_as):
    deployment = deploy(project, people, sandbox, version)
    viewer, outsider = client_as(people["viewer"]), client_as(people["outsider"])
    for path, data in (("rollback/", {"rollback-reason": "x"}), ("status/", {"active": "0"}),
                       ("settings/", {"settings-max_rows": "5", "settings-rate_limit_per_minute": "0"}),
                       ("tokens/", {"token-name": "app"}), ("challenger/", {"remove": "1"})):
        assert viewer.post(f"/deployments/{deployment.slug}/{path}", data).status_code == 403, path
        assert outsider.post(f"/deployments/{deployment.slug}/{path}", data).status_code == 404, path
    deployment.refresh_from_db()
    assert deployment.status == "active" and deployment.max_rows == 0 and not deployment.tokens.exists()


def test_rollback_through_the_form(people, project, version, version2, sandbox, client_as):
    deployment = deploy(project, people, sandbox, version)
    services.promote(deployment, version2, actor=people["scientist"])
    client = client_as(people["scientist"])
    page = client.get(f"/deployments/{deployment.slug}/").content.decode()
    assert "Roll back to Churn v1" in page and "data-confirm=" in page
    missing = client.post(f"/deployments/{deployment.slug}/rollback/", {"rollback-reason": " "})
    assert missing.status_code == 400 and "Say why you roll back" in missing.content.decode()
    done = client.post(f"/deployments/{deployment.slug}/rollback/", {"rollback-reason": "v2 misses churners"},
                       follow=True)
    html = done.content.decode()
    deployment.refresh_from_db()
    assert deployment.champion == version and deployment.fallback == version2
    assert "Rolled back: Churn v1 answers requests again." in html
    assert 'data-kind="rolled_back"' in html and "v2 misses churners" in html
    assert [row["kind"] for row in done.context["history"]] == ["rolled_back", "promoted", "deployed"]


def test_challenger_status_and_settings_forms(people, project, version, version2, sandbox, client_as):
    deployment = deploy(project, people, sandbox, version)
    client = client_as(people["scientist"])
    base = f"/deployments/{deployment.slug}"
    no_share = client.post(f"{base}/challenger/", {"challenger-version": str(version2.uuid),
                                                  "challenger-mode": "canary", "challenger-share": "0"})
    assert no_share.status_code == 400 and "A canary needs a share" in no_share.content.decode()
    client.post(f"{base}/challenger/", {"challenger-version": str(version2.uuid), "challenger-mode": "canary",
                                       "challenger-share": "20"})
    deployment.refresh_from_db()
    assert deployment.challenger == version2 and deployment.challenger_share == 20
    client.post(f"{base}/challenger/", {"remove": "1"})
    deployment.refresh_from_db()
    assert deployment.challenger is None
    client.post(f"{base}/status/", {"active": "0", "status-reason": "maintenance"})
    deployment.refresh_from_db()
    assert deployment.status == "stopped"
    assert "Resume serving" in client.get(f"{base}/").content.decode()
    client.post(f"{base}/status/", {"active": "1"})
    deployment.refresh_from_db()
    assert deployment.status == "active"
    bad = client.post(f"{base}/settings/", {"settings-max_rows": "99999999", "settings-rate_limit_per_minute": "0"})
    assert bad.status_code == 400 and "at most" in bad.content.decode()
    client.post(f"{base}/settings/", {"settings-description": "Scores churn", "settings-max_rows": "100",
                                      "settings-rate_limit_per_minute": "60"})
    deployment.refresh_from_db()
    assert (deployment.description, deployment.max_rows, deployment.rate_limit_per_minute) == ("Scores churn", 100, 60)
    kinds = list(deployment.events.values_list("kind", flat=True))
    assert kinds[:4] == ["settings", "resumed", "stopped", "challenger_removed"]


def test_token_key_is_shown_once_and_can_be_revoked(people, project, version, sandbox, client_as, api_as):
    deployment = deploy(project, people, sandbox, version)
    client = client_as(people["scientist"])
    unnamed = client.post(f"/deployments/{deployment.slug}/tokens/", {"token-name": ""})
    assert unnamed.status_code == 400 and "Name the token" in unnamed.content.decode()
    created = client.post(f"/deployments/{deployment.slug}/tokens/", {"token-name": "crm"})
    key = created.context["new_key"]
    assert key.startswith("pd_") and key in created.content.decode()
    assert key not in client.get(f"/deployments/{deployment.slug}/").content.decode()
    token = DeploymentToken.objects.get()
    from rest_framework.test import APIClient

    caller = APIClient()
    body = json.loads(created.context["snippets"]["body"])
    answer = caller.post(f"/api/v1/deployments/{deployment.slug}/invocations", body, format="json",
                         HTTP_AUTHORIZATION=f"Token {key}")
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
    client.post(f"/deployments/{deployment.slug}/tokens/{token.uuid}/revoke/")
    token.refresh_from_db()
    assert token.status == "revoked"
    assert 'data-token-status="revoked"' in client.get(f"/deployments/{deployment.slug}/").content.decode()


def test_live_chart_has_an_empty_state_then_counts_and_latency(people, project, version, sandbox, client_as):
    deployment = deploy(project, people, sandbox, version)
    client = client_as(people["viewer"])
    assert "No calls yet; the log is written every few seconds." in client.get(
        f"/deployments/{deployment.slug}/live/").content.decode()
    for latency in (2.0, 4.0, 6.0, 8.0):
        log(deployment, version, minutes_ago=2, latency=latency)
    log(deployment, version, minutes_ago=2, latency=100.0, status=400)
    log(deployment, version, minutes_ago=2, latency=50.0, role="shadow")  # not a request of its own
    stats = live_stats(deployment)
    assert (stats["requests"], stats["errors"]) == (5, 1)
    assert stats["p50"] == 6.0 and stats["p95"] == 100.0
    assert len(stats["rows"]) == 60 and sum(r["requests"] for r in stats["rows"]) == 5
    figure = live_figure(stats["rows"])
    assert [trace.name for trace in figure.data] == ["Requests per minute", "p50 latency (ms)", "p95 latency (ms)"]
    fragment = client.get(f"/deployments/{deployment.slug}/live/").content.decode()
    assert 'id="live-chart"' in fragment and 'hx-trigger="every 15s"' in fragment


def test_a_busy_hour_is_sampled_evenly_and_still_counted_exactly(people, project, version, sandbox, monkeypatch):
    """The page reads about LATENCY_SAMPLE latencies however busy the deployment is, spread over every minute
    (the latest N calls would leave the older minutes without latency), while the counts stay exact."""
    from apps.deployments.views import pages

    monkeypatch.setattr(pages, "LATENCY_SAMPLE", 12)
    deployment = deploy(project, people, sandbox, version)
    for minutes_ago in (50, 30, 10):
        for i in range(20):
            log(deployment, version, minutes_ago=minutes_ago, latency=float(minutes_ago + i % 2))
    stats = live_stats(deployment)
    assert stats["requests"] == 60 and stats["sampled"] and 10 <= stats["sample_size"] <= 15
    busy = [row for row in stats["rows"] if row["requests"]]
    assert [row["requests"] for row in busy] == [20, 20, 20]
    assert all(row["p50"] in (m, m + 1) for row, m in zip(busy, (50, 30, 10), strict=True))  # each minute sampled


# --- Model card and audit packet ---------------------------------------------------------------------------


def test_card_lists_deployments_and_offers_deploy_to_deployers(people, project, version, version2, sandbox,
                                                               client_as):
    card = client_as(people["scientist"]).get("/models/churn/v1/").content.decode()
    assert "This version is not deployed anywhere." in card
    assert f'href="/deployments/new/?version={version.uuid}"' in card
    deployment = deploy(project, people, sandbox, version)
    services.promote(deployment, version2, actor=people["scientist"])
    card = client_as(people["viewer"]).get("/models/churn/v1/").content.decode()
    assert 'data-deployment="churn-scoring" data-role="fallback"' in card
    assert "/deployments/new/" not in card  # viewers do not deploy
    assert 'data-role="champion"' in client_as(people["viewer"]).get("/models/churn/v2/").content.decode()


def test_audit_packet_has_the_deployments_section(people, project, version, version2, sandbox, client_as):
    packet = client_as(people["viewer"]).get("/models/churn/v1/audit-packet/?inline=1").content.decode()
    assert 'href="#section-deployments"' not in packet  # never deployed: nothing to say
    deployment = deploy(project, people, sandbox, version)
    services.promote(deployment, version2, actor=people["scientist"], reason="New data")
    services.rollback(deployment, actor=people["admin"], reason="Recall dropped")
    packet = client_as(people["viewer"]).get("/models/churn/v1/audit-packet/?inline=1").content.decode()
    assert 'href="#section-deployments"' in packet
    section = packet[packet.index('id="section-deployments"'):]
    assert "Churn scoring" in section and "sandbox" in section
    assert "Churn v2 replaced this version" in packet and "New data" in packet
    assert "Recall dropped" in packet and "admin" in packet
    assert DeploymentEvent.objects.filter(champion=version).count() == 2
