"""The readiness checklist: what is done, what is missing, and links only for people who may fix it."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.approvals.models import ApprovalRequest
from apps.deployments.models import Deployment
from apps.guidance import readiness
from apps.monitoring.models import AlertRule
from apps.registry.models import ModelVersion, RegisteredModel
from tests.guidance.conftest import make_ready

CARD = "/models/churn/v1/"
API = "/api/v1/models/churn/versions/1/readiness/"


def _items(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-readiness-item="([a-z_]+)" data-done="(true|false)"', html))


def test_a_bare_version_misses_everything(people, version):
    checklist = readiness.for_version(version, people["scientist"])
    assert [i.key for i in checklist.items] == list(readiness.KEYS)
    assert checklist.done_count == 0 and checklist.total == 8


def test_a_ready_version_has_everything(people, version, environment):
    make_ready(version, people, environment)
    checklist = readiness.for_version(version, people["viewer"])
    assert checklist.complete, [i.key for i in checklist.missing]


def test_the_card_shows_the_checklist_with_links_for_a_scientist(people, client_as, version):
    html = client_as(people["scientist"]).get(CARD).content.decode()
    assert "data-readiness" in html
    assert set(_items(html)) == set(readiness.KEYS) and set(_items(html).values()) == {"false"}
    assert f'href="{CARD}#validations" data-readiness-fix' in html
    assert 'href="/models/churn/v1/request-approval/" data-readiness-fix' in html
    assert f'href="/deployments/new/?version={version.uuid}" data-readiness-fix' in html


def test_a_viewer_is_told_who_can_fix_it_instead_of_a_link(people, client_as, version):
    html = client_as(people["viewer"]).get(CARD).content.decode()
    assert "data-readiness-fix" not in html
    assert "Only a data scientist or admin of the project can do this." in html


def test_an_approver_may_not_request_approval(people, version):
    items = {i.key: i for i in readiness.for_version(version, people["approver"]).items}
    assert items["approval"].fix_url == "" and "data scientist" in items["approval"].who


def test_a_pending_request_links_to_it(people, version, environment):
    request = ApprovalRequest.objects.create(
        environment=environment, model_version=version, requested_by=people["scientist"], justification="x",
        required_approvals=1, bound_sha256="a", bound_artifact_sha256="b", bound_signature_sha256="c")
    item = {i.key: i for i in readiness.for_version(version, people["viewer"]).items}["approval"]
    assert not item.done and item.fix_url == f"/approvals/{request.uuid}/" and "Production" in item.sentence


def test_an_approval_for_a_changed_file_does_not_count(people, version, environment):
    make_ready(version, people, environment)
    ModelVersion.objects.filter(pk=version.pk).update(sha256="e" * 64)
    version.refresh_from_db()
    items = {i.key: i for i in readiness.for_version(version, people["scientist"]).items}
    assert not items["approval"].done


def test_failed_validation_is_missing(people, version, environment):
    make_ready(version, people, environment)
    version.validations.update(verdict="fail")
    items = {i.key: i for i in readiness.for_version(version, people["scientist"]).items}
    assert not items["validation"].done and "failed" in items["validation"].sentence


def test_alert_rules_and_fallback_are_judged_on_the_deployment(people, client_as, version, environment):
    deployment = make_ready(version, people, environment)
    AlertRule.objects.filter(deployment=deployment).delete()
    Deployment.objects.filter(pk=deployment.pk).update(fallback=None)
    html = client_as(people["scientist"]).get(CARD).content.decode()
    items = _items(html)
    assert items["alert_rules"] == "false" and items["fallback"] == "false" and items["owner"] == "true"
    assert 'href="/deployments/churn-live/alert-rules/" data-readiness-fix' in html
    assert 'href="/deployments/churn-live/" data-readiness-fix' in html


def test_the_operations_center_shows_readiness_per_deployment(people, client_as, version, environment):
    deployment = make_ready(version, people, environment)
    AlertRule.objects.filter(deployment=deployment).delete()
    html = client_as(people["scientist"]).get("/").content.decode()
    card = html[html.index('data-deployment="churn-live"'):]
    card = card[:card.index("</article>")]
    assert "Readiness: 7 of 8 ready" in card
    assert _items(card)["alert_rules"] == "false"
    assert 'href="/deployments/churn-live/alert-rules/" data-readiness-fix' in card


def test_the_operations_center_readiness_costs_the_same_with_more_deployments(people, client_as, project,
                                                                              version, environment):
    make_ready(version, people, environment)
    client = client_as(people["scientist"])
    client.get("/")
    with CaptureQueriesContext(connection) as one:
        client.get("/")
    for n in range(2, 6):
        model = RegisteredModel.objects.create(project=project, name=f"M{n}", slug=f"m{n}")
        other = ModelVersion.objects.create(model=model, number=1, status="ready", format="skops")
        Deployment.objects.create(project=project, name=f"D{n}", slug=f"d{n}", environment=environment,
                                  champion=other)
    with CaptureQueriesContext(connection) as five:
        html = client.get("/").content.decode()
    assert html.count("Readiness:") == 5
    assert len(five.captured_queries) <= len(one.captured_queries) + 2  # health/alerts counts may add a row query


def test_api_answers_members_and_hides_from_outsiders(people, api_as, client, version):
    body = api_as(people["viewer"]).get(API).json()
    assert body["ready"] == 0 and body["total"] == 8 and {i["key"] for i in body["items"]} == set(readiness.KEYS)
    assert all(i["fix_url"] is None for i in body["items"])
    scientist = api_as(people["scientist"]).get(API).json()
    assert any(i["fix_url"] for i in scientist["items"])
    assert api_as(people["outsider"]).get(API).status_code == 404
    assert api_as(people["scientist"]).get("/api/v1/models/churn/versions/9/readiness/").status_code == 404
    assert client.get(API).status_code in (401, 403)


def test_api_scoped_token_of_another_project_gets_404(people, api_as, other_project, version):
    from apps.accounts.models import Membership

    Membership.objects.create(user=people["viewer"], project=other_project, role="viewer")
    assert api_as(people["viewer"], project=other_project).get(API).status_code == 404


@pytest.mark.parametrize("persona", ["outsider"])
def test_card_of_another_project_is_404(people, client_as, version, persona):
    assert client_as(people[persona]).get(CARD).status_code == 404


def test_owner_and_intended_use_link_to_the_model_edit_page_and_back(people, client_as, version):
    client = client_as(people["scientist"])
    html = client.get(CARD).content.decode()
    edit = "/models/churn/edit/?next=/models/churn/v1/"
    assert f'href="{edit}#id_owner" data-readiness-fix' in html
    assert f'href="{edit}#id_intended_use" data-readiness-fix' in html

    response = client.post("/models/churn/edit/", {"next": CARD, "owner": "scientist", "intended_use": "Retention",
                                                   "task_type": "classification", "risk_tier": "medium"})
    assert response["Location"] == CARD
    items = _items(client.get(CARD).content.decode())
    assert items["owner"] == "true" and items["intended_use"] == "true"
