"""Alert evaluation: a rule opens an alert once, tells people once, updates while it lasts, resolves by itself;
minimum samples, snoozing, default rules, the retraining action, the words, health, and the rule services."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404

from apps.accounts.models import Notification
from apps.audit.models import AuditEvent
from apps.monitoring import alerts, metrics, rollups
from apps.monitoring.models import Alert, AlertRule, RetrainingRun, WebhookDelivery
from tests.monitoring.conftest import customer_rows, log_predictions

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MIN = dt.timedelta(minutes=1)


def traffic(deployment, *, at, ok: int = 0, errors: int = 0, seed: int = 0, latency_ms: float = 5.0):
    if ok:
        log_predictions(deployment, customer_rows(ok, seed=seed), at=at, spread=50 * MIN, latency_ms=latency_ms)
    if errors:
        log_predictions(deployment, customer_rows(errors, seed=seed + 1), at=at, spread=50 * MIN, status_code=500)


def evaluate(now) -> int:
    rollups.run(now=now)
    return alerts.evaluate_all(now=now)


@pytest.fixture
def error_rule(deployment) -> AlertRule:
    return AlertRule.objects.get(deployment=deployment, is_default=True, metric="error_rate")


def _opened_notifications():
    return Notification.objects.filter(kind="monitoring.alert")


def test_default_rules_are_created_with_every_deployment_and_only_once(deployment):
    rules = {r.metric: r for r in AlertRule.objects.filter(deployment=deployment)}
    assert set(rules) == {"error_rate", "latency_p95", "drift_psi", "traffic_change"}
    assert all(r.is_default and r.enabled for r in rules.values())
    assert (rules["error_rate"].threshold, rules["error_rate"].window_minutes, rules["error_rate"].min_samples) \
        == (0.05, 60, 30)
    assert (rules["latency_p95"].threshold, rules["latency_p95"].window_minutes) == (500, 60)
    assert (rules["drift_psi"].comparator, rules["drift_psi"].threshold, rules["drift_psi"].window_minutes,
            rules["drift_psi"].min_samples) == ("gte", 0.25, 24 * 60, 500)
    assert (rules["traffic_change"].comparator, rules["traffic_change"].threshold) == ("lt", -0.5)
    assert alerts.default_rules(deployment) == []  # idempotent
    assert AlertRule.objects.filter(deployment=deployment).count() == 4
    assert AuditEvent.objects.filter(action="alert_rule.defaults_created").count() == 1


def test_an_alert_opens_once_notifies_once_updates_and_resolves_itself(
        deployment, error_rule, people, django_capture_on_commit_callbacks):
    error_rule.webhook_url = "https://hooks.example.org/portal"
    error_rule.save()
    traffic(deployment, at=T0, ok=280, errors=40)
    with django_capture_on_commit_callbacks(execute=True):
        assert evaluate(T0 + HOUR) == 1
    alert = Alert.objects.get(rule=error_rule)
    assert alert.status == "open" and alert.severity == "critical"
    assert alert.value == pytest.approx(0.125) and alert.samples == 320
    assert alert.what_happened \
        == "Error rate was 12.5 % over the last hour (threshold 5 %): 40 of 320 requests failed."
    assert "no prediction" in alert.why_it_matters
    assert "prediction log" in alert.what_to_do and "roll back" in alert.what_to_do
    assert alert.link == alerts.link_for(deployment)
    told = _opened_notifications()
    assert sorted(n.recipient.username for n in told) == ["admin", "scientist"]  # not viewers or approvers
    assert all(n.url == f"/alerts/{alert.uuid}/" for n in told)
    assert sorted(m.to[0] for m in mail.outbox) == ["admin@example.org", "scientist@example.org"]
    assert WebhookDelivery.objects.filter(alert=alert, event="opened").count() == 1

    # It lasts and gets worse: updated, nobody told again.
    traffic(deployment, at=T0 + HOUR, errors=60, seed=5)
    with django_capture_on_commit_callbacks(execute=True):
        assert evaluate(T0 + HOUR + 10 * MIN) == 0
    alert.refresh_from_db()
    assert Alert.objects.filter(rule=error_rule).count() == 1
    assert alert.value > 0.125 and alert.worst_value == alert.value
    assert alert.updated_at == T0 + HOUR + 10 * MIN
    assert _opened_notifications().count() == 2 and len(mail.outbox) == 2
    assert WebhookDelivery.objects.filter(alert=alert).count() == 1
    worst = alert.worst_value

    # It recovers: resolved once, people told once.
    traffic(deployment, at=T0 + 3 * HOUR, ok=100, seed=9)
    with django_capture_on_commit_callbacks(execute=True):
        assert evaluate(T0 + 4 * HOUR) == 1
        assert evaluate(T0 + 4 * HOUR + 5 * MIN) == 0
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolved_at == T0 + 4 * HOUR
    assert alert.value == 0 and alert.worst_value == worst
    assert Notification.objects.filter(kind="monitoring.alert_resolved").count() == 2
    assert len(mail.outbox) == 4
    assert WebhookDelivery.objects.filter(alert=alert, event="resolved").count() == 1
    assert list(AuditEvent.objects.filter(object_id=str(alert.uuid)).values_list("action", flat=True)
                .order_by("sequence")) == ["alert.opened", "alert.resolved"]

    # And a new episode is a new alert.
    traffic(deployment, at=T0 + 5 * HOUR, ok=10, errors=30, seed=11)
    assert evaluate(T0 + 6 * HOUR) == 1
    assert Alert.objects.filter(rule=error_rule).count() == 2
    assert Alert.objects.filter(rule=error_rule).open().count() == 1


def test_min_samples_is_respected_and_an_open_alert_waits_for_data(deployment, error_rule):
    traffic(deployment, at=T0, ok=5, errors=20)  # 80 % errors, but only 25 requests (the rule needs 30)
    assert evaluate(T0 + HOUR) == 0
    assert not Alert.objects.exists() and not _opened_notifications().exists()
    error_rule.refresh_from_db()
    assert error_rule.last_evaluated_at == T0 + HOUR and error_rule.last_value == pytest.approx(0.8)

    traffic(deployment, at=T0 + HOUR, errors=40, seed=3)
    assert evaluate(T0 + 2 * HOUR) == 1
    # An hour later there is no traffic at all: the alert stays open and says why.
    assert evaluate(T0 + 4 * HOUR) == 0
    alert = Alert.objects.get()
    assert alert.status == "open" and "Not enough data" in alert.details["data_note"]


def test_a_snoozed_alert_stays_silent_until_the_snooze_ends(deployment, error_rule, people):
    traffic(deployment, at=T0, ok=100, errors=100)
    evaluate(T0 + HOUR)
    alert = Alert.objects.get()
    assert _opened_notifications().count() == 2
    until = T0 + HOUR + 30 * MIN
    Alert.objects.filter(pk=alert.pk).update(status="snoozed", snoozed_until=until)  # as snooze() would, back then

    traffic(deployment, at=T0 + HOUR, ok=100, errors=100, seed=2)
    evaluate(T0 + HOUR + 20 * MIN)  # still bad, still snoozed: silent
    alert.refresh_from_db()
    assert alert.status == "snoozed" and _opened_notifications().count() == 2

    evaluate(T0 + HOUR + 40 * MIN)  # the snooze is over and it is still bad: told again, once
    evaluate(T0 + HOUR + 45 * MIN)
    alert.refresh_from_db()
    assert alert.status == "open" and alert.snoozed_until is None
    again = _opened_notifications().filter(title__startswith="Still happening")
    assert again.count() == 2


def test_resolving_while_snoozed_is_silent(deployment, error_rule):
    traffic(deployment, at=T0, ok=100, errors=100)
    evaluate(T0 + HOUR)
    alert = Alert.objects.get()
    Alert.objects.filter(pk=alert.pk).update(status="snoozed", snoozed_until=T0 + 10 * HOUR)
    traffic(deployment, at=T0 + 2 * HOUR, ok=100, seed=4)
    assert evaluate(T0 + 3 * HOUR) == 1
    alert.refresh_from_db()
    assert alert.status == "resolved"
    assert not Notification.objects.filter(kind="monitoring.alert_resolved").exists()
    # It breaks again before the snooze ends: the new alert starts snoozed, silently.
    traffic(deployment, at=T0 + 3 * HOUR, ok=10, errors=90, seed=6)
    evaluate(T0 + 4 * HOUR)
    again = Alert.objects.open().get()
    assert again.status == "snoozed" and again.snoozed_until == T0 + 10 * HOUR
    assert _opened_notifications().count() == 2  # only the first alert's


def test_snooze_acknowledge_and_assign_are_audited_and_checked(deployment, error_rule, people):
    traffic(deployment, at=T0, ok=100, errors=100)
    evaluate(T0 + HOUR)
    alert = Alert.objects.get()
    with pytest.raises(PermissionDenied):
        alerts.acknowledge(alert, actor=people["viewer"])
    with pytest.raises(Http404):
        alerts.snooze(alert, actor=people["outsider"], hours=2)
    with pytest.raises(ValidationError) as bad:
        alerts.snooze(alert, actor=people["approver"], hours=-1)
    assert "snoozed_until" in bad.value.message_dict
    alerts.snooze(alert, actor=people["approver"], hours=2)
    assert alert.status == "snoozed" and alert.snoozed_until is not None
    alerts.acknowledge(alert, actor=people["scientist"])
    assert alert.status == "acknowledged" and alert.acknowledged_by == people["scientist"]
    with pytest.raises(ValidationError) as bad:
        alerts.assign(alert, actor=people["scientist"], owner=people["outsider"])
    assert "owner" in bad.value.message_dict
    alerts.assign(alert, actor=people["scientist"], owner=people["viewer"])
    assert alert.owner == people["viewer"]
    assert Notification.objects.filter(kind="monitoring.alert_assigned", recipient=people["viewer"]).count() == 1
    assert people["viewer"] in alerts.recipients(alert)  # owners hear about it from now on
    actions = list(AuditEvent.objects.filter(object_id=str(alert.uuid)).values_list("action", flat=True)
                   .order_by("sequence"))
    assert actions == ["alert.opened", "alert.snoozed", "alert.acknowledged", "alert.assigned"]


def test_the_retrain_action_starts_retraining_and_failures_never_break_evaluation(deployment, error_rule,
                                                                                  monkeypatch):
    from apps.monitoring import retraining

    error_rule.action = "retrain"
    error_rule.save()
    calls = []

    def fake_start(dep, *, actor, trigger, alert):
        calls.append((dep, actor, trigger, alert))
        return RetrainingRun.objects.create(deployment=dep, base_version=dep.champion, trigger=trigger, alert=alert)

    monkeypatch.setattr(retraining, "start_retraining", fake_start, raising=False)
    traffic(deployment, at=T0, ok=100, errors=100)
    evaluate(T0 + HOUR)
    alert = Alert.objects.get()
    assert calls == [(deployment, None, "alert", alert)]
    assert alert.retraining is not None and alert.retraining.trigger == "alert"
    assert "retraining job" in alert.what_to_do

    def broken(*args, **kwargs):
        raise ValidationError({"deployment": ["This model cannot be refitted."]})

    monkeypatch.setattr(retraining, "start_retraining", broken, raising=False)
    traffic(deployment, at=T0 + 2 * HOUR, ok=100, seed=3)
    evaluate(T0 + 3 * HOUR)
    traffic(deployment, at=T0 + 3 * HOUR, errors=100, seed=4)
    assert evaluate(T0 + 4 * HOUR) == 1
    second = Alert.objects.open().get()
    assert "cannot be refitted" in second.details["retraining_error"] and second.retraining is None


def test_latency_rule_and_a_stopped_deployment(deployment):
    rule = AlertRule.objects.get(deployment=deployment, metric="latency_p95")
    traffic(deployment, at=T0, ok=60, latency_ms=900.0)
    assert evaluate(T0 + HOUR) == 1
    alert = Alert.objects.get(rule=rule)
    assert alert.severity == "warning" and "took longer than" in alert.what_happened
    assert alerts.health(deployment) == ("amber", "1 alert open")
    deployment.status = "stopped"
    deployment.save()
    traffic(deployment, at=T0 + 2 * HOUR, ok=60, seed=2)
    assert evaluate(T0 + 3 * HOUR) == 0  # stopped deployments are not evaluated
    assert Alert.objects.get(rule=rule).status == "open"


def test_health_is_red_with_a_critical_alert_amber_with_others_green_without(deployment, error_rule):
    assert alerts.health(deployment) == ("green", "No open alerts")
    warning = AlertRule.objects.get(deployment=deployment, metric="latency_p95")
    Alert.objects.create(rule=warning, severity="warning", title="slow")
    assert alerts.health(deployment)[0] == "amber"
    Alert.objects.create(rule=error_rule, severity="critical", title="errors")
    assert alerts.health(deployment) == ("red", "1 critical alert open")
    Alert.objects.filter(rule=error_rule).update(status="resolved")
    assert alerts.health_of([deployment]) == {deployment.pk: ("amber", "1 alert open")}


def test_drift_alerts_name_the_most_drifted_features(deployment):
    rule = AlertRule.objects.get(deployment=deployment, metric="drift_psi")
    measured = metrics.Measurement(0.41, 1200, {"feature": "income", "features": [
        {"name": "age", "psi": 0.12, "verdict": "moderate"}, {"name": "income", "psi": 0.41, "verdict": "high"},
        {"name": "tenure", "psi": 0.01, "verdict": "stable"}]})
    text = alerts.describe(rule, measured)
    assert [f["name"] for f in text["details"]["features"]] == ["income", "age"]
    assert "PSI of 0.41 over the last 24 hours (threshold 0.25), measured on 1,200 rows" in text["what_happened"]
    assert "Most drifted: income (PSI 0.41, high), age (PSI 0.12, moderate)." in text["what_happened"]
    assert "Compare the drifted features (income, age)" in text["what_to_do"]
    assert "consider retraining" in text["what_to_do"]
    assert "learned from" in text["why_it_matters"]


def test_traffic_drop_words(deployment):
    rule = AlertRule.objects.get(deployment=deployment, metric="traffic_change")
    text = alerts.describe(rule, metrics.Measurement(-0.62, 800, {"current": 304, "before": 800}))
    assert "62 % lower than over the same period one week earlier" in text["what_happened"]


def test_rule_services_validate_every_field_and_check_permission(deployment, people):
    scientist = people["scientist"]
    with pytest.raises(ValidationError) as bad:
        alerts.create_rule(deployment, actor=scientist, name="", metric="nope", threshold=math.nan,
                           window_minutes=4, min_samples=0, webhook_url="ftp://example.org/x", severity="loud")
    assert set(bad.value.message_dict) == {"name", "metric", "threshold", "window_minutes", "min_samples",
                                           "webhook_url", "severity"}
    with pytest.raises(ValidationError) as bad:
        alerts.create_rule(deployment, actor=scientist, name="x", metric="error_rate", threshold=math.inf,
                           window_minutes=30 * 24 * 60 + 1)
    assert set(bad.value.message_dict) == {"threshold", "window_minutes"}
    with pytest.raises(PermissionDenied):
        alerts.create_rule(deployment, actor=people["viewer"], name="x", metric="error_rate", threshold=0.1)
    with pytest.raises(Http404):
        alerts.create_rule(deployment, actor=people["outsider"], name="x", metric="error_rate", threshold=0.1)

    rule = alerts.create_rule(deployment, actor=scientist, name="Recall drop", metric="recall", comparator="lt",
                              threshold=0.7, window_minutes=7 * 24 * 60, min_samples=50,
                              webhook_url="https://hooks.example.org/x", webhook_secret="k")
    assert rule.created_by == scientist and not rule.is_default
    with pytest.raises(ValidationError) as bad:
        alerts.create_rule(deployment, actor=scientist, name="recall DROP", metric="recall", threshold=0.7)
    assert "name" in bad.value.message_dict
    alerts.update_rule(rule, actor=people["admin"], threshold=0.6, webhook_secret="other")
    event = AuditEvent.objects.get(action="alert_rule.updated")
    assert event.details["changes"]["threshold"] == {"from": 0.7, "to": 0.6}
    assert "other" not in str(event.details) and event.details["changes"]["webhook_secret"]["to"] != "k"
    assert AuditEvent.objects.get(action="alert_rule.created").details["webhook_secret"] == "set"
    alerts.delete_rule(rule, actor=scientist)
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    assert AuditEvent.objects.filter(action="alert_rule.deleted").count() == 1
