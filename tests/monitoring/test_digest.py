"""The weekly digest: one plain-text mail per member with an address, usage / health / alerts / drift in words,
sent once per ISO week."""

from __future__ import annotations

import datetime as dt

from django.core import mail

from apps.accounts.models import Notification
from apps.monitoring import alerts, digest, rollups
from apps.monitoring.models import Alert, AlertRule
from tests.monitoring.conftest import customer_rows, log_predictions

NOW = dt.datetime(2026, 11, 9, 7, 0, tzinfo=dt.UTC)  # a Monday morning
DAY = dt.timedelta(days=1)


def test_weekly_digest_tells_every_member_once_per_week(deployment, people, django_capture_on_commit_callbacks):
    people["viewer"].email = ""  # no address: no digest (and no record either, so one is sent once they add one)
    people["viewer"].save()
    log_predictions(deployment, customer_rows(60, seed=1), at=NOW - 10 * DAY)  # the week before
    log_predictions(deployment, customer_rows(90, seed=2), at=NOW - 2 * DAY)  # this week
    log_predictions(deployment, customer_rows(10, seed=3), at=NOW - 2 * DAY, status_code=500)
    rollups.run(now=NOW)
    rule = AlertRule.objects.get(deployment=deployment, metric="error_rate")
    Alert.objects.create(rule=rule, severity="critical", title="Churn live: Error rate above 5 %",
                         what_happened="Error rate was 10 % over the last hour.", opened_at=NOW - 2 * DAY)

    with django_capture_on_commit_callbacks(execute=True):
        assert digest.send_weekly(now=NOW) == 3  # scientist, approver, admin (the outsider is in another project)
    assert sorted(m.to[0] for m in mail.outbox) == ["admin@example.org", "approver@example.org",
                                                    "scientist@example.org"]
    message = mail.outbox[0]
    assert message.subject == "Weekly digest: Alpha (week 2026-W46)"
    body = message.body
    assert "== Churn live (sandbox) ==" in body
    assert "Predictions rose 67% this week (100 against 60 the week before)." in body
    assert "10% of requests failed (10 of 100)" in body
    assert "Health: Critical (1 critical alert open)." in body
    assert "Alerts: 1 open, 1 opened this week." in body and "[Critical] Error rate above 5 %" in body
    assert "Drift:" in body and "&amp;" not in body and "&#x27;" not in body
    assert "http" in body and "/alerts/?project=alpha" in body
    assert Notification.objects.filter(kind="monitoring.digest").count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        assert digest.send_weekly(now=NOW + 2 * DAY) == 0  # the same ISO week: nothing again
        people["viewer"].email = "viewer@example.org"
        people["viewer"].save()
        assert digest.send_weekly(now=NOW + 3 * DAY) == 1  # only the member who was not told yet
        assert digest.send_weekly(now=NOW + 7 * DAY) == 4  # next week: everyone
    assert len(mail.outbox) == 8


def test_projects_without_deployments_get_no_digest(people):
    assert digest.send_weekly(now=NOW) == 0
    assert not mail.outbox


def test_a_quiet_deployment_reads_plainly(deployment, people):
    alerts.evaluate_all(now=NOW)
    text = digest.render(deployment.project, [deployment], now=NOW)
    assert "Usage: No requests in this period yet." in text
    assert "Health: Healthy (no open alerts)." in text and "Alerts: none open." in text
