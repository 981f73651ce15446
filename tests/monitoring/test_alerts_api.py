"""The alerting HTTP surface: /api/v1/alert-rules/ and /api/v1/alerts/, and the alert pages, for every persona
(viewer reads, cannot change; outsider 404; anonymous 401 / login redirect; bad input 400 naming the field)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Membership
from apps.monitoring.models import Alert, AlertRule


@pytest.fixture
def rule(deployment) -> AlertRule:
    rule = AlertRule.objects.get(deployment=deployment, metric="error_rate")
    rule.webhook_url, rule.webhook_secret = "https://hooks.example.org/services/T0/B0/secret-path", "k3y"
    rule.save()
    return rule


@pytest.fixture
def alert(rule) -> Alert:
    return Alert.objects.create(rule=rule, severity="critical", title="Churn live: Error rate above 5 %", value=0.2,
                                worst_value=0.2, samples=100, what_happened="Error rate was 20 % over the last hour.",
                                why_it_matters="Callers get no prediction.", what_to_do="Open the prediction log.",
                                link=f"/deployments/{rule.deployment.slug}/")


# --- Alert rules API ---------------------------------------------------------------------------------------------


def test_rule_list_and_detail_by_persona(deployment, rule, people, api_as, other_project):
    url = reverse("api:alert-rule-list")
    assert APIClient().get(url).status_code == 401
    viewer = api_as(people["viewer"])
    body = viewer.get(url, {"deployment": deployment.slug}).json()
    assert body["count"] == 4 and {r["metric"] for r in body["results"]} == {
        "error_rate", "latency_p95", "drift_psi", "traffic_change"}
    found = viewer.get(reverse("api:alert-rule-detail", args=[rule.uuid])).json()
    assert found["id"] == str(rule.uuid) and found["deployment"] == deployment.slug
    assert found["webhook_secret"] == "set"  # never the secret itself
    assert found["webhook_url"] == "https://hooks.example.org/…"  # the full URL is for those who manage rules
    assert api_as(people["scientist"]).get(found["url"]).json()["webhook_url"] == rule.webhook_url
    outsider = api_as(people["outsider"])
    assert outsider.get(url).json()["count"] == 0
    assert outsider.get(reverse("api:alert-rule-detail", args=[rule.uuid])).status_code == 404
    Membership.objects.create(user=people["scientist"], project=other_project, role="viewer")
    scientist = type(people["scientist"]).objects.get(pk=people["scientist"].pk)  # no cached roles
    scoped = api_as(scientist, project=other_project)  # a token for the other project only
    assert scoped.get(reverse("api:alert-rule-detail", args=[rule.uuid])).status_code == 404
    assert scoped.get(url).json()["count"] == 0


def test_rule_create_update_delete_by_persona(deployment, rule, people, api_as):
    url = reverse("api:alert-rule-list")
    new = {"deployment": deployment.slug, "name": "Recall below 70 %", "metric": "recall", "comparator": "lt",
           "threshold": 0.7, "window_minutes": 10080, "min_samples": 50, "webhook_secret": "abc"}
    assert api_as(people["viewer"]).post(url, new, format="json").status_code == 403
    assert api_as(people["approver"]).post(url, new, format="json").status_code == 403
    outsider = api_as(people["outsider"]).post(url, new, format="json")
    assert outsider.status_code == 400 and "deployment" in outsider.json()["errors"]
    created = api_as(people["scientist"]).post(url, new, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["webhook_secret"] == "set" and "abc" not in str(body) and body["is_default"] is False
    detail = body["url"]

    assert api_as(people["viewer"]).patch(detail, {"threshold": 0.5}, format="json").status_code == 403
    assert api_as(people["outsider"]).patch(detail, {"threshold": 0.5}, format="json").status_code == 404
    changed = api_as(people["admin"]).patch(detail, {"threshold": 0.5, "enabled": False}, format="json")
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.5 and changed.json()["enabled"] is False

    assert api_as(people["viewer"]).delete(detail).status_code == 403
    assert api_as(people["outsider"]).delete(detail).status_code == 404
    assert api_as(people["scientist"]).delete(detail).status_code == 204
    assert api_as(people["scientist"]).get(detail).status_code == 404


@pytest.mark.parametrize(("change", "field"), [
    ({"metric": "happiness"}, "metric"),
    ({"threshold": "lots"}, "threshold"),
    ({"threshold": "1e400"}, "threshold"),
    ({"threshold": "NaN"}, "threshold"),
    ({"window_minutes": 1}, "window_minutes"),
    ({"window_minutes": 50_000}, "window_minutes"),
    ({"min_samples": 0}, "min_samples"),
    ({"webhook_url": "javascript:alert(1)"}, "webhook_url"),
    ({"webhook_url": "ftp://example.org/x"}, "webhook_url"),
    ({"severity": "apocalyptic"}, "severity"),
    ({"name": ""}, "name"),
    ({"name": "Slow answers (p95 above 500 ms)"}, "name"),  # a default rule's name
    ({"is_default": True}, "is_default"),
    ({"last_value": 3}, "last_value"),
])
def test_bad_rule_input_answers_400_naming_the_field(deployment, rule, people, api_as, change, field):
    client = api_as(people["scientist"])
    created = client.post(reverse("api:alert-rule-list"), {"deployment": deployment.slug, "name": "Errors 10 %",
                                                            "metric": "error_rate", "threshold": 0.1, **change},
                          format="json")
    assert created.status_code == 400 and field in created.json()["errors"], created.json()
    patched = client.patch(reverse("api:alert-rule-detail", args=[rule.uuid]), change, format="json")
    assert patched.status_code == 400 and field in patched.json()["errors"], patched.json()
    rule.refresh_from_db()
    assert rule.metric == "error_rate" and rule.is_default


# --- Alerts API --------------------------------------------------------------------------------------------------


def test_alert_list_filters_and_detail_by_persona(deployment, alert, people, api_as):
    url = reverse("api:alert-list")
    assert APIClient().get(url).status_code == 401
    viewer = api_as(people["viewer"])
    body = viewer.get(url).json()
    assert body["count"] == 1 and body["results"][0]["id"] == str(alert.uuid)
    assert viewer.get(url, {"deployment": deployment.slug, "status": "open", "severity": "critical"}).json()["count"] \
        == 1
    assert viewer.get(url, {"status": "unresolved"}).json()["count"] == 1
    assert viewer.get(url, {"status": "resolved"}).json()["count"] == 0
    assert viewer.get(url, {"severity": "warning"}).json()["count"] == 0
    bad = viewer.get(url, {"status": "sleeping", "severity": "meh"})
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"status", "severity"}
    detail = viewer.get(reverse("api:alert-detail", args=[alert.uuid])).json()
    assert detail["what_happened"] and detail["why_it_matters"] and detail["what_to_do"]
    assert detail["deployment"]["slug"] == deployment.slug and detail["page_url"].endswith(f"/alerts/{alert.uuid}/")
    outsider = api_as(people["outsider"])
    assert outsider.get(url).json()["count"] == 0
    assert outsider.get(reverse("api:alert-detail", args=[alert.uuid])).status_code == 404


def test_alert_patch_acknowledge_snooze_assign_by_persona(alert, people, api_as):
    url = reverse("api:alert-detail", args=[alert.uuid])
    assert APIClient().patch(url, {"status": "acknowledged"}, format="json").status_code == 401
    assert api_as(people["viewer"]).patch(url, {"status": "acknowledged"}, format="json").status_code == 403
    assert api_as(people["outsider"]).patch(url, {"status": "acknowledged"}, format="json").status_code == 404

    approver = api_as(people["approver"])
    until = (timezone.now() + timedelta(hours=3)).isoformat()
    snoozed = approver.patch(url, {"status": "snoozed", "snoozed_until": until}, format="json")
    assert snoozed.status_code == 200 and snoozed.json()["status"] == "snoozed" and snoozed.json()["snoozed_until"]
    acked = approver.patch(url, {"status": "acknowledged", "owner": "viewer"}, format="json")
    assert acked.status_code == 200
    assert (acked.json()["status"], acked.json()["acknowledged_by"], acked.json()["owner"]) == (
        "acknowledged", "approver", "viewer")
    cleared = approver.patch(url, {"owner": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["owner"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"title": "Nothing to see"}, "title"),
    ({"severity": "info"}, "severity"),
    ({"status": "resolved"}, "status"),
    ({"status": "snoozed", "snoozed_until": "2001-01-01T00:00:00Z"}, "snoozed_until"),
    ({"status": "snoozed"}, "snoozed_until"),
    ({"snoozed_until": "next tuesday"}, "snoozed_until"),
    ({"owner": "outsider"}, "owner"),
    ({"owner": "nobody-at-all"}, "owner"),
])
def test_read_only_and_bad_alert_input_answers_400_naming_the_field(alert, people, api_as, body, field):
    response = api_as(people["scientist"]).patch(reverse("api:alert-detail", args=[alert.uuid]), body,
                                                 format="json")
    assert response.status_code == 400 and field in response.json()["errors"], response.json()
    alert.refresh_from_db()
    assert (alert.title, alert.severity, alert.status, alert.owner) == (
        "Churn live: Error rate above 5 %", "critical", "open", None)


# --- Pages -------------------------------------------------------------------------------------------------------


def test_alert_pages_by_persona(deployment, alert, people, client_as):
    listing, page = reverse("alert-list"), reverse("alert-detail", args=[alert.uuid])
    for url in (listing, page):
        assert Client().get(url).status_code == 302  # to the sign-in page
    viewer = client_as(people["viewer"]).get(listing).content.decode()
    assert alert.title in viewer
    assert alert.title not in client_as(people["outsider"]).get(listing).content.decode()
    assert "alerts-empty" in client_as(people["outsider"]).get(listing).content.decode()
    assert client_as(people["viewer"]).get(listing, {"status": "bogus"}).status_code == 200  # says so, no 500

    html = client_as(people["viewer"]).get(page).content.decode()
    for heading in ("What happened", "Why it matters", "What to do next"):
        assert heading in html
    assert f'href="/deployments/{deployment.slug}/"' in html and "acknowledge-form" not in html
    assert client_as(people["outsider"]).get(page).status_code == 404
    approver = client_as(people["approver"]).get(page).content.decode()
    assert "acknowledge-form" in approver and "snooze-form" in approver and "assign-form" in approver


def test_respond_forms_by_persona(alert, people, client_as):
    for name, data in (("alert-acknowledge", {}), ("alert-snooze", {"hours": 4}),
                       ("alert-assign", {"owner": "viewer"})):
        url = reverse(name, args=[alert.uuid])
        assert Client().post(url, data).status_code == 302
        assert client_as(people["outsider"]).post(url, data).status_code == 404
        assert client_as(people["viewer"]).post(url, data).status_code == 403
    client = client_as(people["approver"])
    assert client.post(reverse("alert-snooze", args=[alert.uuid]), {"hours": 4}).status_code == 302
    alert.refresh_from_db()
    assert alert.status == "snoozed"
    assert client.post(reverse("alert-assign", args=[alert.uuid]), {"owner": "viewer"}).status_code == 302
    bad = client.post(reverse("alert-assign", args=[alert.uuid]), {"owner": "outsider"})
    assert bad.status_code == 400 and "assign-form" in bad.content.decode()
    assert client.post(reverse("alert-snooze", args=[alert.uuid]), {"hours": 99999}).status_code == 400
    assert client.post(reverse("alert-acknowledge", args=[alert.uuid])).status_code == 302
    alert.refresh_from_db()
    assert (alert.status, alert.owner.username) == ("acknowledged", "viewer")


def test_rule_pages_by_persona(deployment, rule, people, client_as):
    url = reverse("alert-rules", args=[deployment.slug])
    edit = reverse("alert-rule-edit", args=[deployment.slug, rule.uuid])
    delete = reverse("alert-rule-delete", args=[deployment.slug, rule.uuid])
    for target in (url, edit):
        assert Client().get(target).status_code == 302
        assert client_as(people["outsider"]).get(target).status_code == 404
    viewer = client_as(people["viewer"])
    html = viewer.get(url).content.decode()
    assert rule.name in html and "rules-readonly" in html and 'id="rule-form"' not in html
    assert viewer.get(edit).status_code == 403
    form = {"name": "Errors above 10 %", "metric": "error_rate", "comparator": "gt", "threshold": "10",
            "window_minutes": "60", "min_samples": "20", "severity": "critical", "notify_in_app": "on"}
    assert viewer.post(url, form).status_code == 403
    assert viewer.post(delete).status_code == 403
    assert client_as(people["outsider"]).post(url, form).status_code == 404
    assert client_as(people["outsider"]).post(delete).status_code == 404

    scientist = client_as(people["scientist"])
    page = scientist.get(url).content.decode()
    assert 'id="rule-form"' in page and "Feature drift (PSI)" in page  # metric dropdown from METRICS labels
    assert scientist.post(url, form).status_code == 302
    created = AlertRule.objects.get(deployment=deployment, name="Errors above 10 %")
    assert created.threshold == pytest.approx(0.1) and created.created_by == people["scientist"]  # 10 % → 0.1
    bad = scientist.post(url, {**form, "name": "Errors above 20 %", "webhook_url": "ftp://example.org/x"})
    assert bad.status_code == 400 and "id_webhook_url_error" in bad.content.decode()
    bad = scientist.post(url, {**form, "name": "Errors above 20 %", "window_minutes": "2", "threshold": "x"})
    assert bad.status_code == 400 and "id_window_minutes_error" in bad.content.decode()
    assert "id_threshold_error" in bad.content.decode()
    assert not AlertRule.objects.filter(name="Errors above 20 %").exists()

    assert scientist.get(edit).status_code == 200
    assert 'value="5.0"' in scientist.get(edit).content.decode()  # shown as a percentage
    assert scientist.post(edit, {**form, "name": rule.name, "threshold": "8"}).status_code == 302
    rule.refresh_from_db()
    assert rule.threshold == pytest.approx(0.08) and rule.webhook_secret == "k3y"  # empty secret field keeps it
    assert scientist.post(delete).status_code == 302
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
