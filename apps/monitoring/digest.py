"""The weekly digest: per project, a plain-text e-mail to every member (with an address) on how its deployments did
over the last 7 days against the 7 before: usage, health, alerts, errors and drift in plain words.

Sent once per ISO week and member: the in-app notification of kind "monitoring.digest" (its title names the week)
is the record, so a second run in the same week sends nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.accounts.models import Notification, Project, User
from apps.accounts.notifications import absolute_url, notify
from apps.deployments.models import Deployment
from apps.monitoring import alerts, metrics, readings
from apps.monitoring.models import Alert

logger = logging.getLogger(__name__)

KIND = "monitoring.digest"
WEEK = timedelta(days=7)
OPEN_ALERTS_SHOWN = 5
HEALTH_WORDS = {"green": "Healthy", "amber": "Needs attention", "red": "Critical"}


def week_label(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _plain(sentence: str) -> str:
    return sentence.replace("`", "")  # readings mark feature names for HTML; a mail shows them as they are


def _drift_words(now: dict) -> str:
    value = now.get("drift_psi")
    if value is None:
        return "Not enough data (or no reference data) to judge drift."
    feature = now.get("drift_psi_feature") or "the worst feature"
    return _plain(readings.drift([{"name": feature, "psi": value}]))


def deployment_section(deployment: Deployment, *, now: datetime, health: tuple[str, str]) -> dict:
    """What the digest says about one deployment."""
    current = metrics.summary(deployment, start=now - WEEK, end=now)
    previous = metrics.summary(deployment, start=now - 2 * WEEK, end=now - WEEK)
    open_alerts = alerts.open_alerts(deployment)
    opened = Alert.objects.filter(rule__deployment=deployment, opened_at__gte=now - WEEK).count()
    performance = ""
    if current.get("labelled") and current.get("accuracy") is not None:
        performance = (f"Accuracy on {current['labelled']:,} labelled predictions: "
                       f"{readings.percent(current['accuracy'])}.")
    return {
        "deployment": deployment,
        "health": HEALTH_WORDS[health[0]], "health_reason": health[1],
        "usage": _plain(readings.traffic(current["requests"], previous["requests"], period="this week",
                                         before="the week before", what="Predictions")),
        "callers": current.get("callers", 0),
        "errors": _plain(readings.errors(current["errors"], current["requests"])),
        "latency": _plain(readings.latency(current.get("latency_p50"), current.get("latency_p95"),
                                           requests=current["requests"])) if current["requests"] else "",
        "drift": _drift_words(current) if current["requests"] else "",
        "performance": performance,
        "open_alerts": open_alerts[:OPEN_ALERTS_SHOWN], "more_alerts": max(len(open_alerts) - OPEN_ALERTS_SHOWN, 0),
        "opened_this_week": opened,
    }


def _link(project: Project) -> str:
    try:
        return reverse("operations") + f"?project={project.slug}"
    except NoReverseMatch:
        return reverse("project-detail", args=[project.slug])


def render(project: Project, deployments: list[Deployment], *, now: datetime) -> str:
    health = alerts.health_of(deployments)
    sections = [deployment_section(d, now=now, health=health[d.pk]) for d in deployments]
    return render_to_string("monitoring/digest_email.txt", {
        "project": project, "sections": sections, "start": now - WEEK, "end": now, "week": week_label(now),
        "alerts_url": absolute_url(reverse("alert-list") + f"?project={project.slug}"),
    })


def send_weekly(now: datetime | None = None) -> int:
    """E-mail this week's digest to every member of every project with deployments; returns the mails sent."""
    now = now or timezone.now()
    label = week_label(now)
    title_suffix = f"(week {label})"
    sent = 0
    projects = Project.objects.filter(deployments__isnull=False).distinct().order_by("slug")
    for project in projects:
        members = list(User.objects.filter(memberships__project=project, is_active=True).exclude(email="")
                       .distinct())
        already = set(Notification.objects.filter(kind=KIND, project=project, title__endswith=title_suffix)
                      .values_list("recipient_id", flat=True))
        members = [m for m in members if m.pk not in already]
        if not members:
            continue
        deployments = list(Deployment.objects.filter(project=project).select_related("environment")
                           .order_by("name"))
        try:
            body = render(project, deployments, now=now)
        except Exception:  # one project's data must not stop the others' digests
            logger.exception("Could not build the weekly digest of %s", project.slug)
            continue
        notify(members, kind=KIND, title=f"Weekly digest: {project.name} {title_suffix}", body=body,
               url=_link(project), project=project, email=True)
        sent += len(members)
    return sent
