"""Alert rules and alerts: creating and changing rules, the beat evaluation that opens, updates and resolves alerts,
the words each alert says to people, and responding to alerts (acknowledge, snooze, assign).

Every change a person makes is checked against the permission policy and audited here; evaluation runs as the
system (no actor) and audits the alerts it opens and resolves.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.accounts.models import Membership, User
from apps.accounts.notifications import absolute_url, notify
from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.deployments.models import Deployment
from apps.monitoring import metrics
from apps.monitoring.models import Alert, AlertRule, WebhookDelivery

logger = logging.getLogger(__name__)

MIN_WINDOW_MINUTES = 5
MAX_WINDOW_MINUTES = 30 * 24 * 60
MAX_SNOOZE_HOURS = 30 * 24
TOP_FEATURES = 5
RULE_FIELDS = ("name", "metric", "comparator", "threshold", "window_minutes", "min_samples", "severity",
               "notify_in_app", "notify_email", "webhook_url", "webhook_secret", "action", "enabled")
UNRESOLVED = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED, Alert.Status.SNOOZED)

DEFAULT_RULES = [
    {"name": "Error rate above 5 %", "metric": "error_rate", "comparator": AlertRule.Comparator.ABOVE,
     "threshold": 0.05, "window_minutes": 60, "min_samples": 30, "severity": AlertRule.Severity.CRITICAL,
     "notify_email": True},
    {"name": "Slow answers (p95 above 500 ms)", "metric": "latency_p95", "comparator": AlertRule.Comparator.ABOVE,
     "threshold": 500.0, "window_minutes": 60, "min_samples": 30, "severity": AlertRule.Severity.WARNING},
    {"name": "Input data drift (PSI 0.25 or more)", "metric": "drift_psi",
     "comparator": AlertRule.Comparator.AT_LEAST, "threshold": 0.25, "window_minutes": 24 * 60, "min_samples": 500,
     "severity": AlertRule.Severity.WARNING},
    {"name": "Traffic drop (less than half of last week)", "metric": "traffic_change",
     "comparator": AlertRule.Comparator.BELOW, "threshold": -0.5, "window_minutes": 24 * 60, "min_samples": 100,
     "severity": AlertRule.Severity.WARNING},
]

_COMPARE = {"gt": lambda v, t: v > t, "gte": lambda v, t: v >= t, "lt": lambda v, t: v < t,
            "lte": lambda v, t: v <= t}
_SEVERITY_RANK = {AlertRule.Severity.INFO: 1, AlertRule.Severity.WARNING: 2, AlertRule.Severity.CRITICAL: 3}


# --- Rules -----------------------------------------------------------------------------------------------------


def _clean(data: dict, *, deployment: Deployment, instance: AlertRule | None = None) -> dict:
    """Check and normalise rule fields; raise a ValidationError naming every bad field."""
    errors: dict[str, list[str]] = {}
    out = dict(data)
    unknown = set(out) - set(RULE_FIELDS)
    for key in unknown:
        errors[key] = ["This field cannot be set."]
    if "name" in out or instance is None:
        name = (out.get("name") or "").strip()
        out["name"] = name
        if not name:
            errors["name"] = ["Give the rule a name, e.g. “Error rate above 5 %”."]
        elif len(name) > 120:
            errors["name"] = ["Keep the name under 120 characters."]
        elif AlertRule.objects.filter(deployment=deployment, name__iexact=name).exclude(
                pk=getattr(instance, "pk", None)).exists():
            errors["name"] = [f"{deployment.name} already has a rule called “{name}”."]
    if ("metric" in out or instance is None) and out.get("metric") not in metrics.METRICS:
        errors["metric"] = [f"Choose one of: {', '.join(metrics.METRICS)}."]
    if "comparator" in out and out["comparator"] not in AlertRule.Comparator.values:
        errors["comparator"] = [f"Choose one of: {', '.join(AlertRule.Comparator.values)}."]
    if "threshold" in out or instance is None:
        try:
            value = float(out.get("threshold"))
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            errors["threshold"] = ["Give the threshold as a finite number (shares as fractions: 0.05 = 5 %)."]
        else:
            out["threshold"] = value
    for key, low, high, message in (
            ("window_minutes", MIN_WINDOW_MINUTES, MAX_WINDOW_MINUTES,
             "The window is between 5 minutes and 30 days (5 to 43200 minutes)."),
            ("min_samples", 1, 10**12, "The minimum sample size is a whole number, at least 1.")):
        if key in out:
            value = out[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
                    or not low <= value <= high:
                errors[key] = [message]
            else:
                out[key] = int(value)
    if "severity" in out and out["severity"] not in AlertRule.Severity.values:
        errors["severity"] = [f"Choose one of: {', '.join(AlertRule.Severity.values)}."]
    if "action" in out:
        out["action"] = out["action"] or ""
        if out["action"] not in AlertRule.Action.values:
            errors["action"] = ["Choose “” (notify only) or “retrain”."]
    if "webhook_url" in out:
        url = (out["webhook_url"] or "").strip()
        out["webhook_url"] = url
        parts = urlsplit(url) if url else None
        if url and (parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500):
            errors["webhook_url"] = ["Give an http:// or https:// address (at most 500 characters), or leave it "
                                     "empty."]
    if "webhook_secret" in out:
        out["webhook_secret"] = out["webhook_secret"] or ""
        if len(out["webhook_secret"]) > 128:
            errors["webhook_secret"] = ["Keep the secret under 128 characters."]
    for key in ("notify_in_app", "notify_email", "enabled"):
        if key in out and not isinstance(out[key], bool):
            errors[key] = ["Give true or false."]
    if errors:
        raise ValidationError(errors)
    return out


def _rule_details(rule: AlertRule) -> dict:
    return {"deployment": rule.deployment.slug, "name": rule.name, "metric": rule.metric,
            "comparator": rule.comparator, "threshold": rule.threshold, "window_minutes": rule.window_minutes,
            "min_samples": rule.min_samples, "severity": rule.severity, "notify_in_app": rule.notify_in_app,
            "notify_email": rule.notify_email, "webhook_url": rule.webhook_url,
            "webhook_secret": "set" if rule.webhook_secret else "", "action": rule.action, "enabled": rule.enabled}


def create_rule(deployment: Deployment, *, actor, **fields) -> AlertRule:
    """A new rule on `deployment` (ValidationError names each bad field)."""
    require(actor, Action.MANAGE_ALERTS, deployment)
    data = _clean(fields, deployment=deployment)
    try:
        with transaction.atomic():
            rule = AlertRule.objects.create(deployment=deployment, created_by=actor, **data)
            audit.record("alert_rule.created", actor=actor, obj=rule, details=_rule_details(rule))
    except IntegrityError:
        raise ValidationError({"name": [f"{deployment.name} already has a rule called “{data['name']}”."]}) from None
    return rule


def update_rule(rule: AlertRule, *, actor, **fields) -> AlertRule:
    """Change some of a rule's fields; the audit event lists what changed (never the secret itself)."""
    require(actor, Action.MANAGE_ALERTS, rule)
    data = _clean(fields, deployment=rule.deployment, instance=rule)
    before, old_secret = _rule_details(rule), rule.webhook_secret
    for key, value in data.items():
        setattr(rule, key, value)
    after = _rule_details(rule)
    changed = {key: {"from": before[key], "to": after[key]} for key in after if before[key] != after[key]}
    if rule.webhook_secret != old_secret:  # never the secret itself
        changed["webhook_secret"] = {"from": before["webhook_secret"], "to": "changed" if rule.webhook_secret else ""}
    if not changed:
        return rule
    try:
        with transaction.atomic():
            rule.save()
            audit.record("alert_rule.updated", actor=actor, obj=rule,
                         details={"deployment": rule.deployment.slug, "changes": changed})
    except IntegrityError:
        raise ValidationError({"name": ["Another rule of this deployment has that name."]}) from None
    return rule


def delete_rule(rule: AlertRule, *, actor) -> None:
    """Delete a rule with its alerts (the audit event keeps what it was)."""
    require(actor, Action.MANAGE_ALERTS, rule)
    with transaction.atomic():
        audit.record("alert_rule.deleted", actor=actor, obj=rule,
                     details={**_rule_details(rule), "alerts": rule.alerts.count()})
        rule.delete()


def default_rules(deployment: Deployment) -> list[AlertRule]:
    """The rules every deployment starts with (error rate, p95 latency, drift, traffic drop); idempotent."""
    created = []
    with transaction.atomic():
        existing = set(AlertRule.objects.filter(deployment=deployment).values_list("name", flat=True))
        existing_defaults = set(AlertRule.objects.filter(deployment=deployment, is_default=True)
                                .values_list("metric", flat=True))
        for spec in DEFAULT_RULES:
            if spec["name"] in existing or spec["metric"] in existing_defaults:
                continue
            created.append(AlertRule.objects.create(deployment=deployment, is_default=True,
                                                    created_by=deployment.created_by, **spec))
        if created:
            audit.record("alert_rule.defaults_created", actor=None, actor_label="system", obj=deployment,
                         details={"deployment": deployment.slug, "rules": [r.name for r in created]})
    return created


# --- What an alert says ----------------------------------------------------------------------------------------


def format_value(metric: str, value: float | None) -> str:
    """A metric value as people read it: 12.5 %, 812 ms, 0.31, 1,204 requests."""
    if value is None:
        return "no data"
    info = metrics.METRICS.get(metric)
    unit = info.unit if info else ""
    if unit == "%":
        return f"{value * 100:.3g} %" if abs(value) < 0.1 else f"{value * 100:.1f} %".replace(".0 %", " %")
    if unit == "ms":
        return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"
    if unit in ("requests", "rows"):
        return f"{value:,.0f} {unit}"
    if unit == "PSI":
        return f"{value:.2f}"
    return f"{value:.3g}"


def window_words(minutes: int) -> str:
    if minutes == 60:
        return "the last hour"
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return "the last 24 hours" if days == 1 else f"the last {days} days"
    if minutes % 60 == 0:
        return f"the last {minutes // 60} hours"
    return f"the last {minutes} minutes"


WHY = {
    "errors": "When requests fail, the applications and people relying on this model get no prediction at all: "
              "decisions are delayed, or made without the model.",
    "latency": "Slow answers hold up the applications that call the model; some may give up waiting and carry on "
               "without a prediction.",
    "usage": "A sudden change in traffic usually means something changed for the callers: an application broke, "
             "was switched off or moved to another service, or the model is being used in a way nobody planned.",
    "quality": "Missing or unusual input values mean the model is asked about cases unlike those it learned "
               "from; its predictions for those rows are less reliable.",
    "drift": "The data the model sees today differs from the data it learned from. Its predictions can become "
             "less accurate even though nothing looks broken.",
    "performance": "Compared with the real outcomes reported back, the model's predictions are getting worse: "
                   "decisions based on them are less reliable.",
}

TODO = {
    "errors": "1. Open the prediction log filtered to errors to see which requests failed and why. "
              "2. If the errors began when a new version went live, roll back to the fallback version on the "
              "deployment page. 3. If callers send malformed input, contact the team that owns that application.",
    "latency": "1. Check on the monitoring page whether traffic rose at the same time. 2. If a new version is "
               "slower, roll back to the fallback version. 3. Otherwise consider a lighter model or more serving "
               "capacity, with the team that runs the portal.",
    "usage": "1. Look at the callers and the prediction log on the monitoring page: which application stopped "
             "(or started) calling? 2. Ask that team whether they changed anything. 3. Check the error rate: "
             "callers may be giving up because requests fail.",
    "quality": "1. Find the feature with missing or out-of-range values on the monitoring page. 2. Ask the team "
               "that sends the data whether something changed upstream (a new form, a renamed field, a unit). "
               "3. Fix the data at its source; retrain only if the change is real and here to stay.",
    "drift": "1. Compare the drifted features with the reference on the monitoring page: is the change real (new "
             "customers, a new season, a new product) or a data problem? 2. If it is a data problem, fix it at the "
             "source. 3. If it is real, consider retraining on recent data; the new version goes through approval "
             "before it serves.",
    "performance": "1. Check which cases the model now gets wrong on the monitoring page. 2. Consider retraining "
                   "on recent labelled data; the new version goes through approval before it serves. "
                   "3. Until then, tell the people who rely on the predictions to double-check important decisions.",
}


def link_for(deployment: Deployment) -> str:
    """The deployment's monitoring page (the deployment's page while that does not exist)."""
    try:
        return reverse("deployment-monitoring", args=[deployment.slug])
    except NoReverseMatch:
        return reverse("deployment-page", args=[deployment.slug])


def _drifted(measurement: metrics.Measurement) -> list[dict]:
    features = [f for f in (measurement.details or {}).get("features") or [] if f.get("psi") is not None]
    features.sort(key=lambda f: f["psi"], reverse=True)
    drifted = [f for f in features if f.get("verdict") not in (None, "stable")] or features[:1]
    return [{"name": f["name"], "psi": round(float(f["psi"]), 4), "verdict": f.get("verdict", "")}
            for f in drifted[:TOP_FEATURES]]


def describe(rule: AlertRule, measurement: metrics.Measurement) -> dict:
    """title, what_happened, why_it_matters, what_to_do, link and details for the rule's current measurement."""
    info = metrics.METRICS.get(rule.metric)
    label = info.label if info else rule.metric
    group = info.group if info else "usage"
    deployment = rule.deployment
    value, samples = measurement.value, measurement.samples
    shown, limit = format_value(rule.metric, value), format_value(rule.metric, rule.threshold)
    window = window_words(rule.window_minutes)
    comparator = AlertRule.Comparator(rule.comparator).label
    details: dict = {"metric": rule.metric, "threshold": rule.threshold, "comparator": rule.comparator,
                     "window_minutes": rule.window_minutes, "samples": samples}
    feature = (measurement.details or {}).get("feature")
    if feature:
        details["feature"] = feature
    if rule.metric == "error_rate":
        failed = (measurement.details or {}).get("errors")
        failed = int(failed) if failed is not None else round((value or 0) * samples)
        details["errors"] = failed
        happened = (f"Error rate was {shown} over {window} (threshold {limit}): {failed:,} of {samples:,} "
                    "requests failed.")
    elif rule.metric == "traffic_change":
        direction = "lower" if (value or 0) < 0 else "higher"
        happened = (f"Requests over {window} were {format_value(rule.metric, abs(value or 0))} {direction} than "
                    f"over the same period one week earlier (alert when the change is {comparator} {limit}).")
    elif rule.metric.startswith("latency_"):
        share = {"latency_p50": "Half", "latency_p95": "5 %", "latency_p99": "1 %"}.get(rule.metric, "Some")
        happened = (f"{label} was {shown} over {window} (threshold {limit}): {share} of the {samples:,} requests "
                    f"took longer than {shown} to answer.")
    elif rule.metric == "drift_psi":
        features = _drifted(measurement)
        details["features"] = features
        words = ", ".join(f"{f['name']} (PSI {f['psi']:.2f}{', ' + f['verdict'] if f['verdict'] else ''})"
                          for f in features)
        happened = (f"The input data has shifted: the most drifted feature has a PSI of {shown} over {window} "
                    f"(threshold {limit}), measured on {samples:,} rows."
                    + (f" Most drifted: {words}." if words else ""))
    else:
        about = f" ({feature})" if feature else ""
        happened = (f"{label}{about} was {shown} over {window} (alert when {comparator} {limit}), "
                    f"based on {samples:,} {'labelled predictions' if group == 'performance' else 'samples'}.")
    todo = TODO.get(group, TODO["usage"])
    if rule.metric == "drift_psi" and details.get("features"):
        names = ", ".join(f["name"] for f in details["features"][:3])
        todo = todo.replace("Compare the drifted features", f"Compare the drifted features ({names})")
    if rule.action == AlertRule.Action.RETRAIN:
        todo += " This rule starts a retraining job by itself: review the challenger it produces before approving it."
    title = f"{deployment.name}: {rule.name}"
    return {"title": title[:200], "what_happened": happened, "why_it_matters": WHY.get(group, WHY["usage"]),
            "what_to_do": todo, "link": link_for(deployment), "details": details}


# --- Evaluation (beat) -----------------------------------------------------------------------------------------


def evaluate_all(now: datetime | None = None) -> int:
    """Evaluate every enabled rule of every active deployment; return how many alerts opened or resolved."""
    now = now or timezone.now()
    changes = 0
    rules = (AlertRule.objects.filter(enabled=True, deployment__status=Deployment.Status.ACTIVE)
             .select_related("deployment__project").order_by("pk"))
    for rule in rules.iterator(chunk_size=200):
        try:
            outcome = evaluate_rule(rule, now=now)
        except Exception:  # one bad rule (or metric) must not stop the others
            logger.exception("Evaluating alert rule %s failed", rule.pk)
            continue
        changes += outcome in ("opened", "resolved")
    return changes


def evaluate_rule(rule: AlertRule, *, now: datetime | None = None) -> str | None:
    """Open, update or resolve the rule's alert; return "opened", "updated", "resolved" or None (no change)."""
    now = now or timezone.now()
    measurement = metrics.window_value(rule.deployment, rule.metric, minutes=rule.window_minutes, now=now)
    AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now, last_value=measurement.value)
    current = rule.alerts.filter(status__in=UNRESOLVED).first()
    if measurement.value is None or measurement.samples < rule.min_samples:
        if current is not None:
            current.details = {**current.details, "data_note": (
                f"Not enough data to re-check ({measurement.samples:,} samples, the rule needs "
                f"{rule.min_samples:,}): the alert stays until the metric can be measured again.")}
            current.save(update_fields=["details"])
        return None
    holds = _COMPARE[rule.comparator](measurement.value, rule.threshold)
    if holds and current is None:
        return _open(rule, measurement, now=now)
    if holds:
        return _update(current, rule, measurement, now=now)
    if current is not None:
        return _resolve(current, rule, measurement, now=now)
    return None


def _worse(rule: AlertRule, a: float | None, b: float) -> float:
    if a is None:
        return b
    return min(a, b) if rule.comparator in ("lt", "lte") else max(a, b)


def _open(rule: AlertRule, measurement: metrics.Measurement, *, now: datetime) -> str | None:
    text = describe(rule, measurement)
    # A rule that recovers and breaks again while its last alert was snoozed stays quiet until the snooze ends.
    last = rule.alerts.filter(status=Alert.Status.RESOLVED, snoozed_until__gt=now).order_by("-resolved_at").first()
    snoozed_until = last.snoozed_until if last is not None else None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule, severity=rule.severity, value=measurement.value, worst_value=measurement.value,
                samples=measurement.samples, opened_at=now, updated_at=now, snoozed_until=snoozed_until,
                status=Alert.Status.SNOOZED if snoozed_until else Alert.Status.OPEN, **text)
            audit.record("alert.opened", actor=None, actor_label="system", obj=alert,
                         details={"rule": str(rule.uuid), "deployment": rule.deployment.slug,
                                  "value": measurement.value, "threshold": rule.threshold})
    except IntegrityError:  # another evaluator opened it a moment ago: update that one instead
        current = rule.alerts.filter(status__in=UNRESOLVED).first()
        return _update(current, rule, measurement, now=now) if current is not None else None
    if alert.status == Alert.Status.OPEN:
        _tell(alert, "opened")
    if rule.action == AlertRule.Action.RETRAIN:
        _start_retraining(alert)
    return "opened"


def _update(alert: Alert, rule: AlertRule, measurement: metrics.Measurement, *, now: datetime) -> str:
    text = describe(rule, measurement)
    details = {**alert.details, **text.pop("details")}
    details.pop("data_note", None)
    alert.value, alert.samples, alert.updated_at = measurement.value, measurement.samples, now
    alert.worst_value = _worse(rule, alert.worst_value, measurement.value)
    alert.what_happened, alert.details = text["what_happened"], details
    fields = ["value", "samples", "updated_at", "worst_value", "what_happened", "details"]
    woke = alert.status == Alert.Status.SNOOZED and alert.snoozed_until is not None and alert.snoozed_until <= now
    if woke:  # the snooze ended and the problem is still there: tell people again, once
        alert.status, alert.snoozed_until = Alert.Status.OPEN, None
        fields += ["status", "snoozed_until"]
    alert.save(update_fields=fields)
    if woke:
        _tell(alert, "still")
    return "updated"


def _resolve(alert: Alert, rule: AlertRule, measurement: metrics.Measurement, *, now: datetime) -> str | None:
    with transaction.atomic():
        won = Alert.objects.filter(pk=alert.pk, status__in=UNRESOLVED).update(
            status=Alert.Status.RESOLVED, resolved_at=now, updated_at=now, value=measurement.value,
            samples=measurement.samples)
        if not won:
            return None
        audit.record("alert.resolved", actor=None, actor_label="system", obj=alert,
                     details={"rule": str(rule.uuid), "deployment": rule.deployment.slug,
                              "value": measurement.value, "threshold": rule.threshold})
    was_snoozed = alert.status == Alert.Status.SNOOZED and alert.snoozed_until and alert.snoozed_until > now
    alert.refresh_from_db()
    _tell(alert, "resolved", quiet=bool(was_snoozed))
    return "resolved"


def recipients(alert: Alert) -> list[User]:
    """The project's scientists and admins, and the alert's owner."""
    project = alert.rule.deployment.project
    users = list(User.objects.filter(
        memberships__project=project, is_active=True,
        memberships__role__in=[Membership.Role.SCIENTIST, Membership.Role.ADMIN]).distinct())
    if alert.owner is not None and alert.owner not in users:
        users.append(alert.owner)
    return users


def alert_url(alert: Alert) -> str:
    return reverse("alert-detail", args=[alert.uuid])


def _tell(alert: Alert, event: str, *, quiet: bool = False) -> None:
    """Notify people (unless quiet) and queue the webhook for `event`: opened, still (after a snooze), resolved."""
    rule = alert.rule
    if not quiet and (rule.notify_in_app or rule.notify_email):
        if event == "resolved":
            title = f"Resolved: {alert.title}"
            body = (f"{rule.name} is back within its threshold "
                    f"(now {format_value(rule.metric, alert.value)}). {alert.what_happened}")
        else:
            title = ("Still happening: " if event == "still" else "") + alert.title
            body = (f"{alert.what_happened}\n\nWhy it matters: {alert.why_it_matters}\n\n"
                    f"What to do next: {alert.what_to_do}")
        users = recipients(alert)
        kind = "monitoring.alert_resolved" if event == "resolved" else "monitoring.alert"
        if rule.notify_in_app:
            notify(users, kind=kind, title=title, body=body, url=alert_url(alert),
                   project=rule.deployment.project, email=rule.notify_email)
        else:
            _mail(users, title=title, body=body, url=alert_url(alert))
    if rule.webhook_url and event in ("opened", "resolved"):
        if event == "resolved" and not alert.deliveries.filter(event="opened").exists():
            return
        WebhookDelivery.objects.create(alert=alert, event=event, url=rule.webhook_url,
                                       payload=webhook_payload(alert, event))


def _mail(users: list[User], *, title: str, body: str, url: str) -> None:
    addresses = [u.email for u in users if u.email]

    def send() -> None:
        text = f"{body.rstrip()}\n\nOpen it in the portal: {absolute_url(url)}\n"
        for address in addresses:
            try:
                EmailMessage(subject=title, body=text, to=[address]).send()
            except Exception:  # the alert is in the portal anyway
                logger.exception("Could not e-mail the alert %r to %s", title, address)

    if addresses:
        transaction.on_commit(send)


def webhook_payload(alert: Alert, event: str) -> dict:
    rule, deployment = alert.rule, alert.rule.deployment
    return {
        "event": f"alert.{event}",
        "alert": {"id": str(alert.uuid), "title": alert.title, "status": alert.status, "severity": alert.severity,
                  "metric": rule.metric, "value": alert.value, "worst_value": alert.worst_value,
                  "threshold": rule.threshold, "comparator": rule.comparator, "samples": alert.samples,
                  "what_happened": alert.what_happened, "why_it_matters": alert.why_it_matters,
                  "what_to_do": alert.what_to_do, "details": alert.details,
                  "opened_at": alert.opened_at.isoformat() if alert.opened_at else None,
                  "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
                  "url": absolute_url(alert_url(alert)), "link": absolute_url(alert.link) if alert.link else None},
        "rule": {"id": str(rule.uuid), "name": rule.name},
        "deployment": {"slug": deployment.slug, "name": deployment.name, "project": deployment.project.slug},
    }


def _start_retraining(alert: Alert) -> None:
    """The rule's "retrain" action; a failure is written on the alert and never stops the evaluation."""
    try:
        from apps.monitoring.retraining import start_retraining

        with transaction.atomic():
            run = start_retraining(alert.rule.deployment, actor=None, trigger="alert", alert=alert)
    except Exception as exc:
        logger.exception("Alert %s could not start retraining", alert.uuid)
        reason = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        alert.details = {**alert.details, "retraining_error": reason or exc.__class__.__name__}
        alert.save(update_fields=["details"])
        return
    if run is not None:
        alert.retraining = run
        alert.save(update_fields=["retraining"])


# --- Responding ------------------------------------------------------------------------------------------------


def acknowledge(alert: Alert, *, actor) -> Alert:
    """Someone is on it: the alert stays until the metric recovers, but says who took it."""
    require(actor, Action.RESPOND_ALERTS, alert)
    now = timezone.now()
    with transaction.atomic():
        won = Alert.objects.filter(pk=alert.pk, status__in=[Alert.Status.OPEN, Alert.Status.SNOOZED]).update(
            status=Alert.Status.ACKNOWLEDGED, acknowledged_by=actor, acknowledged_at=now, snoozed_until=None)
        if not won:
            raise ValidationError({"status": ["Only an open or snoozed alert can be acknowledged."]})
        audit.record("alert.acknowledged", actor=actor, obj=alert, details={"deployment": _slug(alert)})
    alert.refresh_from_db()
    return alert


def snooze(alert: Alert, *, actor, until: datetime | None = None, hours: float | None = None) -> Alert:
    """Silence the alert until `until` (or for `hours`): no reminders; it speaks again if still bad then."""
    require(actor, Action.RESPOND_ALERTS, alert)
    now = timezone.now()
    if until is None and hours is not None:
        try:
            until = now + timedelta(hours=float(hours))
        except (TypeError, ValueError, OverflowError):
            raise ValidationError({"snoozed_until": ["Give the number of hours to snooze."]}) from None
    if until is None:
        raise ValidationError({"snoozed_until": ["Say until when to snooze the alert."]})
    if timezone.is_naive(until):
        until = timezone.make_aware(until)
    if until <= now:
        raise ValidationError({"snoozed_until": ["Choose a time in the future."]})
    if until > now + timedelta(hours=MAX_SNOOZE_HOURS):
        raise ValidationError({"snoozed_until": ["Snooze for at most 30 days."]})
    with transaction.atomic():
        won = Alert.objects.filter(pk=alert.pk, status__in=UNRESOLVED).update(status=Alert.Status.SNOOZED,
                                                                              snoozed_until=until)
        if not won:
            raise ValidationError({"status": ["A resolved alert cannot be snoozed."]})
        audit.record("alert.snoozed", actor=actor, obj=alert,
                     details={"deployment": _slug(alert), "until": until.isoformat()})
    alert.refresh_from_db()
    return alert


def assign(alert: Alert, *, actor, owner: User | None) -> Alert:
    """Make `owner` (a member of the project; None: nobody) responsible for the alert, and tell them."""
    require(actor, Action.RESPOND_ALERTS, alert)
    project = alert.rule.deployment.project
    if owner is not None and not Membership.objects.filter(project=project, user=owner, user__is_active=True).exists():
        raise ValidationError({"owner": [f"{owner.username} is not a member of {project.name}."]})
    if owner == alert.owner:
        return alert
    with transaction.atomic():
        previous = alert.owner
        alert.owner = owner
        alert.save(update_fields=["owner"])
        audit.record("alert.assigned", actor=actor, obj=alert,
                     details={"deployment": _slug(alert), "owner": owner.username if owner else None,
                              "previous": previous.username if previous else None})
        if owner is not None and owner != actor:
            notify([owner], kind="monitoring.alert_assigned", title=f"Assigned to you: {alert.title}",
                   body=f"{actor.username} asked you to look after this alert.\n\n{alert.what_happened}",
                   url=alert_url(alert), project=project, email=alert.rule.notify_email)
    return alert


def _slug(alert: Alert) -> str:
    return alert.rule.deployment.slug


# --- Health (the Operations Center's traffic light) ------------------------------------------------------------


def health(deployment: Deployment) -> tuple[str, str]:
    """("red"|"amber"|"green", reason): red with an unresolved critical alert, amber with any other, else green."""
    return health_of([deployment])[deployment.pk]


def health_of(deployments) -> dict[int, tuple[str, str]]:
    """health() for many deployments in one query: {deployment id: (colour, reason)}."""
    ids = [d.pk for d in deployments]
    rows = (Alert.objects.filter(rule__deployment__in=ids, status__in=UNRESOLVED).order_by()
            .values("rule__deployment", "severity").annotate(n=Count("id")))
    counts: dict[int, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["rule__deployment"], {})[row["severity"]] = row["n"]
    out = {}
    for pk in ids:
        by = counts.get(pk, {})
        critical, other = by.get("critical", 0), sum(n for s, n in by.items() if s != "critical")
        if critical:
            out[pk] = ("red", f"{critical} critical alert{'s' if critical > 1 else ''} open")
        elif other:
            out[pk] = ("amber", f"{other} alert{'s' if other > 1 else ''} open")
        else:
            out[pk] = ("green", "No open alerts")
    return out


def open_alerts(deployment: Deployment):
    """The deployment's unresolved alerts, worst first."""
    alerts = list(Alert.objects.filter(rule__deployment=deployment, status__in=UNRESOLVED).select_related("rule"))
    alerts.sort(key=lambda a: (-_SEVERITY_RANK.get(a.severity, 0), -a.opened_at.timestamp()))
    return alerts


def unresolved_q() -> Q:
    return Q(status__in=UNRESOLVED)
