# ruff: noqa: F811  (pytest fixtures imported from the monitoring conftest share names with parameters)
"""Monitoring pages: a deployment's monitoring page, the Model Operations Center and the impact view."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.approvals import services as approvals
from apps.deployments import services as deployments
from apps.monitoring import charts, rollups
from apps.monitoring.metrics import Series
from apps.monitoring.models import Alert, AlertRule, MonitoringSettings
from apps.registry.models import ModelVersion
from tests.deployments.conftest import ANSWERS, approve
from tests.monitoring.conftest import customer_rows, log_predictions, ready_reference


def _recent() -> dt.datetime:
    """A moment a few minutes ago, but today (UTC), so "requests today" counts what it writes."""
    now = timezone.now()
    return max(rollups.floor(now, "1d"), now - dt.timedelta(minutes=10))


def _traffic(deployment, *, rows: int = 90, at: dt.datetime | None = None, seed: int = 1, **extra):
    log_predictions(deployment, customer_rows(rows, seed=seed), at=at or _recent(), per_request=3,
                    spread=dt.timedelta(minutes=5), **extra)
    rollups.run()


def _figures(response) -> dict[str, dict]:
    """The Plotly figures of a page, by chart element id (from their JSON data islands)."""
    html = response.content.decode()
    found = re.findall(r'<script id="([\w-]+)-data" type="application/json">(.*?)</script>', html, re.S)
    return {name: json.loads(text) for name, text in found}


# --- The deployment's monitoring page ----------------------------------------------------------------------------


def test_monitoring_page_draws_every_chart_with_its_reading(deployment, people, client_as):
    ready_reference(deployment)
    _traffic(deployment, rows=150)
    _traffic(deployment, rows=9, status_code=500, seed=2)
    response = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug]),
                                                {"range": "24h"})
    assert response.status_code == 200
    html = response.content.decode()
    figures = _figures(response)
    for key in ("chart-usage", "chart-latency", "chart-errors", "chart-quality", "chart-predictions",
                "chart-feature-0"):
        assert key in figures, key
    assert "95% of requests were answered within" in html
    assert "of requests failed (3 of 53)" in html
    assert 'data-reading="drift-heatmap"' in html
    assert "plotly/plotly.min.js" in html and "<script>" not in html  # no inline script (CSP)
    assert response.context["summary"]["requests"] == 53
    # Performance: no labels yet, so the page says how to send them.
    assert 'data-empty="labels"' in html and f"/api/v1/deployments/{deployment.slug}/feedback/" in html
    # The header: health, open alerts (linking to the alerts page), links to the deployment and its rules.
    assert 'data-health="green"' in html and "0 open alerts" in html
    assert reverse("deployment-page", args=[deployment.slug]) in html
    assert reverse("alert-rules", args=[deployment.slug]) in html


def test_monitoring_page_without_traffic_says_what_to_do(deployment, people, client_as):
    response = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-empty="traffic"' in html and "No requests in this period yet." in html
    assert _figures(response) == {}
    assert 'data-empty="labels"' in html


def test_monitoring_page_without_reference_data_explains_drift_needs_it(deployment, people, client_as):
    ModelVersion.objects.filter(pk=deployment.champion_id).update(training_dataset=None)
    _traffic(deployment)
    html = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug])).content.decode()
    assert 'data-empty="reference"' in html and "Drift needs reference data" in html
    assert 'id="chart-usage"' in html  # usage is drawn all the same


@pytest.mark.parametrize("params", [
    {"range": "custom", "start": "yesterday", "end": "now"},
    {"range": "custom"},
    {"range": "fortnight"},
    {"range": "custom", "start": "2026-03-02T10:00", "end": "2026-03-01T10:00"},
    {"range": "custom", "start": "2020-01-01T00:00", "end": "2026-01-01T00:00"},
    {"start": "2999-01-01T00:00", "end": "2999-01-02T00:00"},
])
def test_range_picker_rejects_bad_input_with_a_message_and_the_default_range(deployment, people, client_as, params):
    response = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug]), params)
    assert response.status_code == 400
    assert 'id="range-errors"' in response.content.decode()
    assert response.context["range"] == "7d"
    assert response.context["end"] - response.context["start"] == dt.timedelta(days=7)


def test_custom_range_reads_that_window(deployment, people, client_as):
    response = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug]), {
        "range": "custom", "start": "2026-03-01T10:00", "end": "2026-03-02T10:00"})
    assert response.status_code == 200
    assert response.context["end"] - response.context["start"] == dt.timedelta(days=1)


def test_markers_show_a_rollback_on_the_time_charts(deployment, people, client_as, version2):
    scientist = people["scientist"]
    deployments.promote(deployment, version2, actor=scientist, reason="Try the new tree")
    deployments.rollback(deployment, actor=scientist, reason="Worse")
    _traffic(deployment)
    response = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug]),
                                                {"range": "24h"})
    usage = _figures(response)["chart-usage"]
    names = {trace.get("name") for trace in usage["data"]}
    assert {"Rollback", "Deployment"} <= names
    assert "yaxis9" in usage["layout"]
    assert 'id="markers-note"' in response.content.decode()


@pytest.mark.parametrize("role", ["viewer", "scientist", "approver", "admin"])
def test_members_of_every_role_see_the_monitoring_pages(deployment, people, client_as, role):
    client = client_as(people[role])
    assert client.get(reverse("deployment-monitoring", args=[deployment.slug])).status_code == 200
    response = client.get(reverse("operations"))
    assert response.status_code == 200 and f'data-deployment="{deployment.slug}"' in response.content.decode()
    assert client.get(reverse("operations-impact")).status_code == 200


def test_outsiders_get_404_and_see_no_cards(deployment, people, client_as):
    client = client_as(people["outsider"])
    assert client.get(reverse("deployment-monitoring", args=[deployment.slug])).status_code == 404
    html = client.get(reverse("operations")).content.decode()
    assert f'data-deployment="{deployment.slug}"' not in html and "Nothing is deployed yet." in html
    assert deployment.name not in client.get(reverse("operations-impact")).content.decode()


def test_anonymous_visitors_are_sent_to_sign_in(deployment, client):
    for url in (reverse("deployment-monitoring", args=[deployment.slug]), reverse("operations"),
                reverse("operations-impact")):
        response = client.get(url)
        assert response.status_code == 302 and reverse("login") in response["Location"]


# --- The Model Operations Center -----------------------------------------------------------------------------------


def test_operations_center_cards_show_health_requests_today_and_alerts(deployment, people, client_as):
    _traffic(deployment, rows=30)  # 10 requests
    rule = AlertRule.objects.create(deployment=deployment, name="Errors (test)", metric="error_rate", threshold=0.1,
                                    severity=AlertRule.Severity.CRITICAL)
    Alert.objects.create(rule=rule, severity=rule.severity, title="Errors are high")
    response = client_as(people["viewer"]).get(reverse("operations"))
    card = next(d for d in response.context["cards"] if d.pk == deployment.pk)
    assert card.requests_today == 10 and card.open_alerts == 1
    assert card.health["level"] == "red"
    html = response.content.decode()
    assert 'data-health="red"' in html and "Failing" in html  # colour and words
    assert '<svg class="sparkline"' in html


def test_operations_center_lists_approvals_waiting_and_recertifications(deployment, people, client_as, production,
                                                                          version, version2):
    approved = approve(version, production, people)
    approved.expires_at = timezone.now() + dt.timedelta(days=10)
    approved.save(update_fields=["expires_at"])
    approvals.request_approval(version2, production, actor=people["scientist"], justification="Better",
                               answers=ANSWERS)
    response = client_as(people["approver"]).get(reverse("operations"))
    assert response.context["waiting_count"] == 1
    assert [r.pk for r in response.context["recertify"]] == [approved.pk]
    html = response.content.decode()
    assert f'data-recertify="{approved.uuid}"' in html
    assert reverse("approval-detail", args=[approved.uuid]) in html


@pytest.mark.parametrize(("persona", "approvals", "admin"), [
    ("viewer", False, False), ("scientist", False, False), ("approver", True, False), ("admin", True, True),
    ("staff", False, True)])
def test_operations_center_sections_follow_the_role(people, client_as, persona, approvals, admin):
    html = client_as(people[persona]).get(reverse("operations")).content.decode()
    assert ('data-section="approvals"' in html) is approvals
    assert ('data-section="admin"' in html) is admin
    assert 'data-section="projects"' in html and 'data-section="jobs"' in html


def test_operations_center_filters_by_project(deployment, people, client_as):
    client = client_as(people["viewer"])
    assert client.get(reverse("operations"), {"project": "alpha"}).context["cards"] == [deployment]
    response = client.get(reverse("operations"), {"project": "beta"})
    assert response.context["cards"] == [] and "Nothing is deployed in this project yet." in response.content.decode()


def test_operations_center_empty_states_by_role(people, client_as, project):
    viewer = client_as(people["viewer"]).get(reverse("operations")).content.decode()
    assert "Nothing is deployed in your projects yet." in viewer
    assert "Nothing is deployed yet." in client_as(people["scientist"]).get(reverse("operations")).content.decode()
    from tests.conftest import make_user

    loner = make_user("loner")
    assert "You are not in any project yet." in client_as(loner).get(reverse("operations")).content.decode()


def test_operations_center_takes_the_same_queries_for_many_deployments(deployment, people, client_as, sandbox,
                                                                       version, django_assert_max_num_queries):
    client = client_as(people["viewer"])
    _traffic(deployment)
    client.get(reverse("operations"))  # warm the session
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("operations"))
    for i in range(5):
        more = deployments.deploy(deployment.project, actor=people["scientist"], name=f"Churn {i}",
                                  environment=sandbox, version=version)
        _traffic(more, seed=i + 3)
        rule = AlertRule.objects.create(deployment=more, name=f"r{i}", metric="error_rate", threshold=0.1)
        Alert.objects.create(rule=rule, severity=rule.severity, title="x")
    with django_assert_max_num_queries(len(one.captured_queries)):
        response = client.get(reverse("operations"))
    assert len(response.context["cards"]) == 6


# --- The impact view -----------------------------------------------------------------------------------------------


def test_impact_view_shows_use_callers_adoption_and_value(deployment, people, client_as):
    _traffic(deployment, rows=60, caller="crm")
    _traffic(deployment, rows=30, caller="web", seed=2)
    MonitoringSettings.objects.update_or_create(deployment=deployment,
                                                defaults={"value_per_prediction": Decimal("0.50")})
    response = client_as(people["viewer"]).get(reverse("operations-impact"))
    assert response.status_code == 200
    figures = _figures(response)
    assert "chart-predictions" in figures and figures["chart-predictions"]["layout"]["barmode"] == "stack"
    assert "chart-callers" in figures
    html = response.content.decode()
    assert "≈ $45.00 this month at $0.50 per prediction." in html
    assert "New in the last 4 weeks: 30 requests in the latest week." in html


def test_impact_view_without_deployments(people, client_as):
    html = client_as(people["viewer"]).get(reverse("operations-impact")).content.decode()
    assert "Nothing is deployed here yet." in html


# --- Figures (pure) --------------------------------------------------------------------------------------------------


T = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)


def test_markers_get_one_legend_entry_per_kind():
    series = Series("requests", "1h", [(T, 5.0, 5), (T + dt.timedelta(hours=1), 7.0, 7)])
    marks = [{"time": T, "kind": "deployed", "label": "Deployed v1"},
             {"time": T + dt.timedelta(minutes=30), "kind": "promoted", "label": "New champion v2"},
             {"time": T + dt.timedelta(minutes=40), "kind": "rolled_back", "label": "Rolled back"},
             {"time": T + dt.timedelta(minutes=50), "kind": "approval", "label": "Approved v2"},
             {"time": T + dt.timedelta(minutes=55), "kind": "stopped", "label": "Stopped"}]
    fig = charts.usage_figure(series, marks)
    names = [trace.name for trace in fig.data]
    assert names == ["Requests", "Deployment", "Rollback", "Approval", "Stopped"]
    deployment_trace = fig.data[1]
    assert list(deployment_trace.y) == [0, 1, None, 0, 1, None] and deployment_trace.yaxis == "y9"


def test_figures_are_none_without_data():
    empty = Series("requests", "1h", [])
    assert charts.usage_figure(empty) is None
    assert charts.latency_figure(empty, empty, empty) is None
    assert charts.drift_heatmap_figure({"times": [], "features": [], "psi": []}) is None
    assert charts.distribution_figure(None) is None
    assert charts.stacked_daily_figure([("a", [(T.date(), 0)])], y_title="x") is None


def test_heatmap_and_distribution_figures():
    fig = charts.drift_heatmap_figure({"times": [T], "features": ["age", "income"], "psi": [[0.01], [0.4]]})
    assert list(fig.data[0].y) == ["age", "income"] and fig.data[0].zmax == 0.5
    bars = charts.distribution_figure({"labels": ["a", "b"], "reference_shares": [0.5, 0.5],
                                       "current_shares": [0.9, 0.1]})
    assert [t.name for t in bars.data] == ["Reference", "Now"] and bars.layout.barmode == "group"


def test_sparkline_points_scale_to_the_box():
    assert charts.sparkline_points([0, 5, 10], width=22, height=12, pad=1) == "1.0,11.0 11.0,6.0 21.0,1.0"
    assert charts.sparkline_points([]) == ""
    assert charts.sparkline_points([0, 0]) == "2.0,26.0 118.0,26.0"


def test_performance_chart_appears_once_labels_arrive(deployment, people, client_as, api_as):
    logs = log_predictions(deployment, customer_rows(40, seed=4), at=_recent(), spread=dt.timedelta(minutes=5))
    labels = [{"request_id": log.request_id, "label": log.outputs[0] if i % 4 else 1 - log.outputs[0]}
              for i, log in enumerate(logs)]
    response = api_as(people["scientist"]).post(reverse("api:deployment-feedback", args=[deployment.slug]), labels,
                                                format="json")
    assert response.status_code in (200, 201), response.content
    rollups.run()
    response = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug]),
                                                {"range": "24h"})
    assert "chart-performance" in _figures(response)
    assert "Accuracy is 75% on 40 labelled predictions" in response.content.decode()


def test_range_picker_names_the_time_zone(deployment, people, client_as):
    html = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[deployment.slug])).content.decode()
    assert f"times are in {timezone.get_current_timezone_name()}." in html


def test_a_deployment_serving_after_its_approval_expired_is_red_on_the_operations_center(people, project, client_as,
                                                                                        production, version):
    granted = approve(version, production, people)
    serving = deployments.deploy(project, actor=people["scientist"], name="Churn prod", environment=production,
                                 version=version)
    page = client_as(people["viewer"]).get(reverse("operations"))
    assert next(d for d in page.context["cards"] if d.pk == serving.pk).health["level"] == "green"

    granted.expires_at = timezone.now() - dt.timedelta(minutes=1)  # as approvals.expire_due leaves it
    granted.save(update_fields=["expires_at"])
    page = client_as(people["viewer"]).get(reverse("operations"))
    card = next(d for d in page.context["cards"] if d.pk == serving.pk)
    assert card.health["level"] == "red" and "without a current approval" in card.health["reason"]
    monitoring = client_as(people["viewer"]).get(reverse("deployment-monitoring", args=[serving.slug]))
    assert "without a current approval" in monitoring.content.decode()
