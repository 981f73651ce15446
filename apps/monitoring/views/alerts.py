"""Alert pages: every alert the user can see, one alert (what happened, why it matters, what to do, and the
acknowledge / snooze / assign forms), and a deployment's alert rules with their create / edit / delete forms.

Every change goes through alerts.py, which checks the permission and writes the audit event.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError as FilterError

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require
from apps.approvals.forms import apply_service_errors
from apps.audit.models import AuditEvent
from apps.core.views import redirect_after_post
from apps.deployments.models import Deployment
from apps.monitoring import alerts, metrics
from apps.monitoring.api_alerts import alert_filters
from apps.monitoring.forms import AlertRuleForm, AssignForm, SnoozeForm, is_percent
from apps.monitoring.models import Alert, AlertRule
from apps.monitoring.views import deployment_for

PAGE_SIZE = 25
STATUS_CHOICES = [("unresolved", "Not resolved"), *Alert.Status.choices, ("all", "Any status")]


def _alerts():
    return Alert.objects.select_related("rule__deployment__project", "owner", "acknowledged_by")


def _alert_for(request, uuid) -> Alert:
    return get_object_or_404(_alerts().visible_to(request.user), uuid=uuid)




# --- Alerts ------------------------------------------------------------------------------------------------------


@login_required
def alert_list(request):
    user = request.user
    params = {key: request.GET.get(key, "") for key in ("project", "deployment", "status", "severity")}
    params["status"] = params["status"] or "unresolved"
    query = {**params, "status": "" if params["status"] == "all" else params["status"]}
    found = _alerts().visible_to(user)
    try:
        found = alert_filters(found, query)
        error = ""
    except FilterError:
        found, error = found.none(), "Those filters are not valid: choose them from the lists."
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    projects = list(Project.objects.visible_to(user).order_by("name"))
    deployments = Deployment.objects.visible_to(user).order_by("name").values_list("slug", "name")
    filtered = any(v for k, v in params.items() if k != "status") or params["status"] != "unresolved"
    return render(request, "monitoring/alert_list.html", {
        "page": page, "projects": projects, "deployments": list(deployments), "filters": params,
        "statuses": STATUS_CHOICES, "severities": AlertRule.Severity.choices, "filtered": filtered,
        "filter_error": error, "querystring": urlencode({k: v for k, v in params.items() if v}),
    })


def _history(alert: Alert) -> list[dict]:
    events = AuditEvent.objects.filter(object_type="monitoring.alert", object_id=str(alert.uuid)).select_related(
        "actor").order_by("created_at")
    words = {"alert.opened": "Opened", "alert.resolved": "Resolved (the metric recovered)",
             "alert.acknowledged": "Acknowledged", "alert.snoozed": "Snoozed", "alert.assigned": "Owner changed"}
    rows = []
    for event in events:
        text = words.get(event.action, event.action)
        if event.action == "alert.snoozed":
            text += f" until {event.details.get('until', '')[:16].replace('T', ' ')}"
        elif event.action == "alert.assigned":
            text += f": {event.details.get('owner') or 'nobody'}"
        rows.append({"time": event.created_at, "who": event.actor.username if event.actor else "the system",
                     "text": text})
    return rows


def _render_alert(request, alert: Alert, *, status: int = 200, **forms):
    may_respond = can(request.user, Action.RESPOND_ALERTS, alert)
    project = alert.rule.deployment.project
    context = {
        "alert": alert, "rule": alert.rule, "deployment": alert.rule.deployment, "project": project,
        "metric": metrics.METRICS.get(alert.rule.metric), "may_respond": may_respond,
        "value": alerts.format_value(alert.rule.metric, alert.value),
        "worst": alerts.format_value(alert.rule.metric, alert.worst_value),
        "threshold": alerts.format_value(alert.rule.metric, alert.rule.threshold),
        "history": _history(alert),
        "deliveries": list(alert.deliveries.all()[:20]),
        "predictions_url": reverse("deployment-predictions", args=[alert.rule.deployment.slug]),
        "may_manage": can(request.user, Action.MANAGE_ALERTS, alert),
    }
    if may_respond and alert.status != Alert.Status.RESOLVED:
        context["snooze_form"] = forms.get("snooze_form") or SnoozeForm()
        context["assign_form"] = forms.get("assign_form") or AssignForm(
            project=project, initial={"owner": alert.owner.username if alert.owner else None})
    return render(request, "monitoring/alert_detail.html", context, status=status)


@login_required
def alert_detail(request, uuid):
    return _render_alert(request, _alert_for(request, uuid))


def _alert_url(alert: Alert) -> str:
    return reverse("alert-detail", args=[alert.uuid])


@login_required
@require_POST
def alert_acknowledge(request, uuid):
    alert = _alert_for(request, uuid)
    try:
        alerts.acknowledge(alert, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Acknowledged: others can see you are on it. It resolves itself when the metric "
                                  "recovers.")
    return redirect_after_post(request, _alert_url(alert))


@login_required
@require_POST
def alert_snooze(request, uuid):
    alert = _alert_for(request, uuid)
    require(request.user, Action.RESPOND_ALERTS, alert)
    form = SnoozeForm(request.POST)
    if form.is_valid():
        try:
            alerts.snooze(alert, actor=request.user, hours=form.cleaned_data["hours"])
        except ValidationError as exc:
            apply_service_errors(form, exc, field_map={"snoozed_until": "hours"})
        else:
            messages.success(request, f"Snoozed for {form.cleaned_data['hours']} hours.")
            return redirect_after_post(request, _alert_url(alert))
    return _render_alert(request, alert, status=400, snooze_form=form)


@login_required
@require_POST
def alert_assign(request, uuid):
    alert = _alert_for(request, uuid)
    require(request.user, Action.RESPOND_ALERTS, alert)
    form = AssignForm(request.POST, project=alert.rule.deployment.project)
    if form.is_valid():
        try:
            alerts.assign(alert, actor=request.user, owner=form.cleaned_data["owner"])
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            owner = form.cleaned_data["owner"]
            messages.success(request, f"{owner.username} owns this alert now." if owner else "Nobody owns it now.")
            return redirect_after_post(request, _alert_url(alert))
    return _render_alert(request, alert, status=400, assign_form=form)


# --- Rules -------------------------------------------------------------------------------------------------------


def _rules_url(deployment: Deployment) -> str:
    return reverse("alert-rules", args=[deployment.slug])


def _rule_rows(deployment: Deployment) -> list[dict]:
    rules = list(AlertRule.objects.filter(deployment=deployment).order_by("name"))
    open_by_rule = {a.rule_id: a for a in Alert.objects.filter(rule__deployment=deployment,
                                                              status__in=alerts.UNRESOLVED)}
    rows = []
    for rule in rules:
        info = metrics.METRICS.get(rule.metric)
        rows.append({"rule": rule, "label": info.label if info else rule.metric,
                     "threshold": alerts.format_value(rule.metric, rule.threshold),
                     "window": alerts.window_words(rule.window_minutes).removeprefix("the last "),
                     "last_value": alerts.format_value(rule.metric, rule.last_value)
                     if rule.last_evaluated_at else "not checked yet",
                     "open_alert": open_by_rule.get(rule.pk)})
    return rows


def _render_rules(request, deployment: Deployment, *, form=None, rule=None, status: int = 200):
    may_manage = can(request.user, Action.MANAGE_ALERTS, deployment)
    context = {"deployment": deployment, "project": deployment.project, "rows": _rule_rows(deployment),
               "may_manage": may_manage, "editing": rule, "health": alerts.health(deployment),
               "metrics": [(key, info) for key, info in metrics.METRICS.items()]}
    if may_manage:
        context["form"] = form or AlertRuleForm(rule=rule)
    return render(request, "monitoring/alert_rules.html", context, status=status)


def _save_rule(request, deployment: Deployment, rule: AlertRule | None):
    form = AlertRuleForm(request.POST, rule=rule)
    if form.is_valid():
        data = form.service_fields()
        try:
            if rule is None:
                saved = alerts.create_rule(deployment, actor=request.user, **data)
            else:
                saved = alerts.update_rule(rule, actor=request.user, **data)
        except ValidationError as exc:
            if hasattr(exc, "error_dict") and "threshold" in exc.error_dict and is_percent(data["metric"]):
                exc = ValidationError({"threshold": ["Give the threshold as a number (5 means 5 %)."]})
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Rule “{saved.name}” {'created' if rule is None else 'saved'}: it is checked "
                                      "every few minutes.")
            return redirect_after_post(request, _rules_url(deployment))
    return _render_rules(request, deployment, form=form, rule=rule, status=400)


@login_required
def alert_rules(request, slug: str):
    deployment = deployment_for(request, slug)
    if request.method == "POST":
        require(request.user, Action.MANAGE_ALERTS, deployment)
        return _save_rule(request, deployment, None)
    return _render_rules(request, deployment)


@login_required
def alert_rule_edit(request, slug: str, rule):
    deployment = deployment_for(request, slug)
    instance = get_object_or_404(AlertRule.objects.filter(deployment=deployment), uuid=rule)
    require(request.user, Action.MANAGE_ALERTS, deployment)
    if request.method == "POST":
        return _save_rule(request, deployment, instance)
    return _render_rules(request, deployment, rule=instance)


@login_required
@require_POST
def alert_rule_delete(request, slug: str, rule):
    deployment = deployment_for(request, slug)
    instance = get_object_or_404(AlertRule.objects.filter(deployment=deployment), uuid=rule)
    alerts.delete_rule(instance, actor=request.user)
    messages.success(request, f"Rule “{instance.name}” deleted.")
    return redirect_after_post(request, _rules_url(deployment))


urlpatterns = [
    path("alerts/", alert_list, name="alert-list"),
    path("alerts/<uuid:uuid>/", alert_detail, name="alert-detail"),
    path("alerts/<uuid:uuid>/acknowledge/", alert_acknowledge, name="alert-acknowledge"),
    path("alerts/<uuid:uuid>/snooze/", alert_snooze, name="alert-snooze"),
    path("alerts/<uuid:uuid>/assign/", alert_assign, name="alert-assign"),
    path("deployments/<slug:slug>/alert-rules/", alert_rules, name="alert-rules"),
    path("deployments/<slug:slug>/alert-rules/<uuid:rule>/", alert_rule_edit, name="alert-rule-edit"),
    path("deployments/<slug:slug>/alert-rules/<uuid:rule>/delete/", alert_rule_delete, name="alert-rule-delete"),
]
