"""Monitoring pages: a deployment's monitoring page, the Model Operations Center, and the impact view.

They read `apps.monitoring.metrics` only (rollups), never the prediction log, so they stay fast with tens of millions
of logged predictions. Figures come from charts.py and the sentence under each from readings.py, on the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from apps.accounts.models import Membership, Project
from apps.accounts.permissions import Action, can, projects_with_action
from apps.approvals.models import ApprovalRequest
from apps.approvals.services import waiting_for
from apps.core.models import Job
from apps.deployments.models import Deployment
from apps.monitoring import alerts, charts, metrics, readings, reference
from apps.monitoring.models import Alert, MonitoringSettings
from apps.monitoring.views import deployment_for, retraining

CARDS_PER_PAGE = 48
SPARK_DAYS = 14
IMPACT_DAYS = 28
IMPACT_SERIES = 9  # models drawn one by one; the rest are summed as "Other models"
RECERTIFY_WITHIN = timedelta(days=30)
PERFORMANCE_KEYS = ("accuracy", "f1", "roc_auc", "mae", "rmse", "r2")


def _url(name: str, *args, query: dict | None = None) -> str:
    url = reverse(name, args=args)
    return f"{url}?{urlencode(query)}" if query else url


def _deployments():
    return Deployment.objects.select_related("project", "environment", "champion__model")


def health_of(deployments) -> dict[int, dict]:
    """{deployment id: {"level": green|amber|red, "reason"}}: red while a critical alert is open or the champion
    serves a gated environment without a current approval, amber while another alert is open (two queries)."""
    found = alerts.health_of(deployments)
    lapsed = _serving_without_approval(deployments)
    health = {d.pk: {"level": found[d.pk][0], "reason": found[d.pk][1]} for d in deployments}
    for pk in lapsed:
        reason = "Serving without a current approval (it expired, or the file changed): re-certify it or stop it."
        health[pk] = {"level": "red", "reason": f"{reason} {health[pk]['reason']}." if health[pk]["level"] != "green"
                      else reason}
    return health


def _serving_without_approval(deployments) -> set[int]:
    """Active deployments in a gated environment whose champion's approval there is no longer current."""
    gated = [d for d in deployments if d.status == Deployment.Status.ACTIVE and d.environment.gated]
    if not gated:
        return set()
    approvals = (ApprovalRequest.objects.filter(status=ApprovalRequest.Status.APPROVED,
                                                model_version_id__in={d.champion_id for d in gated},
                                                environment_id__in={d.environment_id for d in gated})
                 .select_related("model_version"))
    current = {(a.model_version_id, a.environment_id) for a in approvals if a.is_current_approval}
    return {d.pk for d in gated if (d.champion_id, d.environment_id) not in current}


# --- The time range ------------------------------------------------------------------------------------------------


RANGES = {"6h": ("Last 6 hours", timedelta(hours=6)), "24h": ("Last 24 hours", timedelta(hours=24)),
          "7d": ("Last 7 days", timedelta(days=7)), "30d": ("Last 30 days", timedelta(days=30)),
          "custom": ("Custom", None)}
DEFAULT_RANGE = "7d"
MAX_SPAN = timedelta(days=366)


class RangeForm(forms.Form):
    range = forms.ChoiceField(label="Time range", required=False, choices=[(k, v[0]) for k, v in RANGES.items()])
    start = forms.DateTimeField(label="From", required=False,
                                widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"))
    end = forms.DateTimeField(label="To", required=False, help_text="Custom range only.",
                              widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"))

    def clean(self):
        data = super().clean()
        choice = data.get("range") or ("custom" if data.get("start") or data.get("end") else DEFAULT_RANGE)
        data["range"] = choice
        if choice != "custom":
            return data
        start, end = data.get("start"), data.get("end")
        if not start and "start" not in self.errors:
            self.add_error("start", "Choose when the custom range starts.")
        if not end and "end" not in self.errors:
            self.add_error("end", "Choose when the custom range ends.")
        if start and end:
            if start >= end:
                self.add_error("end", "The end must be after the start.")
            elif end - start > MAX_SPAN:
                self.add_error("end", "Choose at most a year.")
            elif start > timezone.now():
                self.add_error("start", "The start is in the future: there is no data yet.")
        return data


def time_window(params) -> tuple[RangeForm, str, object, object]:
    """(form, range key, start, end); invalid input keeps its errors on the form and falls back to the default."""
    now = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    form = RangeForm(params if any(params.get(k) for k in ("range", "start", "end")) else None)
    if form.is_bound and form.is_valid():
        choice = form.cleaned_data["range"]
        if choice == "custom":
            return form, choice, form.cleaned_data["start"], form.cleaned_data["end"]
        return form, choice, now - RANGES[choice][1], now
    if not form.is_bound:
        form = RangeForm(initial={"range": DEFAULT_RANGE})
    return form, DEFAULT_RANGE, now - RANGES[DEFAULT_RANGE][1], now


# --- A deployment's monitoring page ---------------------------------------------------------------------------------


def _chart(key: str, title: str, reading: str, figure, label: str, empty: str = "", **extra) -> dict:
    return {"id": f"chart-{key}", "key": key, "title": title, "reading": reading, "figure": figure, "label": label,
            "empty": empty or reading, **extra}


def _performance_key(summary: dict) -> str | None:
    return next((k for k in PERFORMANCE_KEYS if summary.get(k) is not None), None)


def _performance(summary: dict, series, marks) -> dict:
    key = _performance_key(summary)
    labelled = summary.get("labelled") or 0
    if key is None:
        return _chart("performance", "Performance", readings.performance("Accuracy", [], labelled=0), None,
                      "Performance over time", empty_template="monitoring/_mon_no_labels.html")
    info = metrics.METRICS[key]
    series = series[key]
    values = [v for _, v, _ in series.points] or [summary[key]]
    return _chart("performance", f"Performance: {info.label}",
                  readings.performance(info.label, values, labelled=labelled, unit=info.unit,
                                       higher_is_better=info.higher_is_better, overall=summary.get(key)),
                  charts.performance_figure(series, label=info.label, percent=info.unit == "%", markers=marks),
                  f"{info.label} per bucket over the chosen period")


def dashboard(deployment: Deployment, *, start, end) -> dict:
    """Every chart of the monitoring page with its reading, from metrics (rollups) only, each rollup read once."""
    with metrics.reading():
        return _dashboard(deployment, start=start, end=end)


def _dashboard(deployment: Deployment, *, start, end) -> dict:
    span = end - start
    now = metrics.summary(deployment, start=start, end=end)
    before = {"requests": metrics.requests_between(deployment, start=start - span, end=start)}
    marks = metrics.markers(deployment, start=start, end=end)
    period, before_words = readings.period_words(span.total_seconds() / 3600)
    requests = now.get("requests") or 0

    names = ["requests", "latency_p50", "latency_p95", "latency_p99", "error_rate", "missing_share",
             "out_of_range_share", *([_performance_key(now)] if _performance_key(now) else [])]
    series = metrics.series_many(deployment, names, start=start, end=end)
    usage = series["requests"]
    quality = [series["missing_share"], series["out_of_range_share"]]
    report = metrics.drift_report(deployment, start=start, end=end)
    has_reference = report.get("reference") is not None
    heat = metrics.drift_heatmap(deployment, start=start, end=end) if has_reference else {}
    # Reference data exists (drift may still wait for traffic or for its statistics) or is missing altogether.
    has_data = has_reference or reference.dataset_for(deployment, deployment.champion) is not None
    bucket_word = {"5m": "5-minute buckets", "1h": "hours", "1d": "days"}.get(heat.get("bucket") or usage.bucket,
                                                                             "buckets")

    top = [f for f in report.get("features", []) if f.get("psi") is not None
           and f.get("verdict") != readings.TOO_FEW][:3]
    drifted = [_chart(f"feature-{i}", f"“{f['name']}”: reference against now", readings.feature_shift(f),
                      charts.distribution_figure(f, title=f["name"]),
                      f"Share of {f['name']} values per bin, in the reference and now") for i, f in enumerate(top)]
    return {
        "summary": now, "previous": before, "markers": marks, "report": report, "has_reference": has_reference,
        "drift_reason": report.get("reason") or readings.NO_REFERENCE, "drifted": drifted,
        "charts": [
            _chart("usage", "Usage", readings.traffic(requests, before.get("requests") or 0, period=period,
                                                     before=before_words),
                   charts.usage_figure(usage, marks), "Requests per bucket over the chosen period",
                   empty_template="monitoring/_mon_no_traffic.html"),
            _chart("latency", "Latency", readings.latency(now.get("latency_p50"), now.get("latency_p95"),
                                                          now.get("latency_p99"), requests=requests),
                   charts.latency_figure(series["latency_p50"], series["latency_p95"], series["latency_p99"], marks),
                   "p50, p95 and p99 latency in milliseconds per bucket"),
            _chart("errors", "Errors", readings.errors(now.get("errors") or 0, requests),
                   charts.error_rate_figure(series["error_rate"], marks) if now.get("errors") else None,
                   "Share of requests that failed per bucket"),
            _chart("quality", "Data quality",
                   readings.quality(now.get("missing_share"), now.get("out_of_range_share"),
                                    missing_feature=now.get("missing_share_feature"),
                                    out_of_range_feature=now.get("out_of_range_share_feature"),
                                    requests=requests),
                   charts.quality_figure(*quality, marks),
                   "Worst missing share and out-of-range share per bucket"),
        ],
        "drift_heatmap": _chart(
            "drift-heatmap", "Drift per feature over time",
            readings.heatmap(heat, bucket_word=bucket_word) if has_reference else report.get("reason", ""),
            charts.drift_heatmap_figure(heat, marks) if has_reference else None,
            "Heat-map of PSI per feature and time bucket",
            empty_template="" if has_data else "monitoring/_mon_no_reference.html"),
        "prediction_chart": _chart(
            "predictions", "Prediction distribution",
            readings.prediction_drift(report.get("predictions"), has_reference=has_data),
            charts.distribution_figure(report.get("predictions"), title="prediction"),
            "Share of predictions per bin, in the reference and now"),
        "performance": _performance(now, series, marks),
    }


@login_required
def deployment_monitoring(request, slug: str):
    deployment = deployment_for(request, slug)
    form, choice, start, end = time_window(request.GET)
    open_alerts = Alert.objects.filter(rule__deployment=deployment).open().count()
    feedback_api = _url("api:deployment-feedback", deployment.slug)
    context = {
        "deployment": deployment, "project": deployment.project, "form": form, "range": choice,
        "start": start, "end": end, "health": health_of([deployment])[deployment.pk], "open_alerts": open_alerts,
        "alerts_url": _url("alert-list", query={"deployment": deployment.slug}),
        "rules_url": _url("alert-rules", deployment.slug),
        "feedback_api": request.build_absolute_uri(feedback_api),
        "feedback_upload_url": _url("deployment-feedback", deployment.slug),
        "may_send_feedback": can(request.user, Action.SEND_FEEDBACK, deployment),
        "may_manage_alerts": can(request.user, Action.MANAGE_ALERTS, deployment),
        **dashboard(deployment, start=start, end=end),
        **retraining.panel_context(request, deployment),
    }
    return render(request, "monitoring/monitoring.html", context, status=400 if form.errors else 200)


# --- The Model Operations Center ------------------------------------------------------------------------------------


def _visible(request) -> tuple[list[Project], str, object]:
    projects = list(Project.objects.visible_to(request.user).order_by("name"))
    chosen = request.GET.get("project", "")
    deployments = _deployments().filter(project__in=projects).order_by("project__name", "name")
    if chosen:
        deployments = deployments.filter(project__slug=chosen)
    return projects, chosen, deployments


def _recertifications(user, projects: list[Project], chosen: str) -> list[ApprovalRequest]:
    """Current approvals that expire within 30 days (as approvals.notifications reminds their owners)."""
    now = timezone.now()
    due = (ApprovalRequest.objects.filter(environment__project__in=projects, status=ApprovalRequest.Status.APPROVED,
                                          expires_at__gt=now, expires_at__lte=now + RECERTIFY_WITHIN)
           .select_related("environment__project", "model_version__model").order_by("expires_at"))
    if chosen:
        due = due.filter(environment__project__slug=chosen)
    return [r for r in due[:20] if r.artifact_matches()][:10]


def _open_alert_counts(deployments) -> dict[int, int]:
    return dict(Alert.objects.filter(rule__deployment__in=[d.pk for d in deployments]).open().order_by()
                .values_list("rule__deployment").annotate(n=Count("id")))


@login_required
def operations(request):
    user = request.user
    projects, chosen, deployments = _visible(request)
    page = Paginator(deployments, CARDS_PER_PAGE).get_page(request.GET.get("page"))
    cards = list(page)
    daily = metrics.daily_requests(cards, days=SPARK_DAYS) if cards else {}
    health = health_of(cards)
    alerts = _open_alert_counts(cards) if cards else {}
    for deployment in cards:
        points = daily.get(deployment.pk, [])
        deployment.health = health[deployment.pk]
        deployment.requests_today = points[-1][1] if points else 0  # the last point is today (UTC)
        deployment.trend = [n for _, n in points]
        deployment.open_alerts = alerts.get(deployment.pk, 0)
    waiting = request.approvals_waiting = waiting_for(user)  # the header badge counts the same list
    memberships = list(Membership.objects.filter(user=user).select_related("project").order_by("project__name"))
    roles = {m.role for m in memberships}
    return render(request, "monitoring/operations.html", {
        "page": page, "cards": cards, "projects": projects, "chosen": chosen, "spark_days": SPARK_DAYS,
        "spark_label": f"Requests per day over the last {SPARK_DAYS} days",
        "querystring": urlencode({"project": chosen} if chosen else {}),
        "waiting": waiting[:5], "waiting_count": len(waiting),
        "recertify": _recertifications(user, projects, chosen),
        "recent_jobs": Job.objects.visible_to(user).select_related("project")[:5],
        "may_deploy": bool(roles & {Membership.Role.SCIENTIST, Membership.Role.ADMIN}),
        "is_member": bool(roles), "alerts_url": _url("alert-list"), "memberships": memberships,
        "is_approver": bool(roles & {Membership.Role.APPROVER, Membership.Role.ADMIN}) or bool(waiting),
        "is_admin": Membership.Role.ADMIN in roles or user.is_staff,
        "admin_projects": (list(projects_with_action(user, Action.MANAGE_MEMBERS).order_by("name")[:10])
                           if Membership.Role.ADMIN in roles or user.is_staff else []),
        "red": sum(1 for d in cards if d.health["level"] == "red"),
        "amber": sum(1 for d in cards if d.health["level"] == "amber"),
    })


# --- The impact view --------------------------------------------------------------------------------------------------


def _weekly(points: list[tuple]) -> list[int]:
    counts = [n for _, n in points][-IMPACT_DAYS:]
    return [sum(counts[i:i + 7]) for i in range(0, len(counts), 7)]


def _values(deployments: list[Deployment]) -> list[dict]:
    """Estimated value this month for deployments with a value per prediction (rows scored × value)."""
    settings = {s.deployment_id: s for s in MonitoringSettings.objects.filter(
        deployment__in=[d.pk for d in deployments], value_per_prediction__isnull=False)}
    now = timezone.now()
    month = timezone.localtime(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = []
    for deployment in deployments:
        chosen = settings.get(deployment.pk)
        if chosen is None:
            continue
        predictions = metrics.summary(deployment, start=month, end=now).get("rows") or 0
        rows.append({"deployment": deployment, "predictions": predictions, "unit": chosen.value_unit,
                     "amount": float(chosen.value_per_prediction) * predictions,
                     "reading": readings.value(predictions, chosen.value_per_prediction, chosen.value_unit)})
    return rows


@login_required
def impact(request):
    projects, chosen, deployments = _visible(request)
    deployments = list(deployments)
    daily = metrics.daily_requests(deployments, days=IMPACT_DAYS) if deployments else {}
    callers = metrics.daily_callers(deployments, days=IMPACT_DAYS) if deployments else {}
    totals: dict = defaultdict(int)
    caller_totals: dict = defaultdict(int)
    for points in daily.values():
        for day, n in points:
            totals[day] += n
    for points in callers.values():
        for day, n in points:
            caller_totals[day] += n
    ranked = sorted(deployments, key=lambda d: -sum(n for _, n in daily.get(d.pk, [])))
    shown = [(f"{d.name} ({d.project.name})", daily.get(d.pk, [])) for d in ranked[:IMPACT_SERIES]]
    rest = ranked[IMPACT_SERIES:]
    if rest:
        other: dict = defaultdict(int)
        for d in rest:
            for day, n in daily.get(d.pk, []):
                other[day] += n
        shown.append((f"Other models ({len(rest)})", sorted(other.items())))
    days = sorted(totals)
    table = [{"deployment": d, "total": sum(n for _, n in daily.get(d.pk, [])),
              "reading": readings.adoption(_weekly(daily.get(d.pk, [])))} for d in ranked]
    values = _values(deployments)
    units = {v["unit"] for v in values}
    return render(request, "monitoring/impact.html", {
        "projects": projects, "chosen": chosen, "deployments": deployments, "days": IMPACT_DAYS,
        "predictions_figure": charts.stacked_daily_figure(shown, y_title="requests per day"),
        "callers_figure": charts.daily_line_figure([(d, caller_totals[d]) for d in sorted(caller_totals)],
                                                   name="Active callers", y_title="callers per day"),
        "adoption": readings.adoption(_weekly([(d, totals[d]) for d in days])),
        "callers_reading": readings.callers([caller_totals[d] for d in sorted(caller_totals)]),
        "table": table, "values": values,
        "value_total": readings.money(sum(v["amount"] for v in values), units.pop()) if len(units) == 1 else "",
    })


urlpatterns = [
    path("deployments/<slug:slug>/monitoring/", deployment_monitoring, name="deployment-monitoring"),
    path("operations/", operations, name="operations"),
    path("operations/impact/", impact, name="operations-impact"),
]
