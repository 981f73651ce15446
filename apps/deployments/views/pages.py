"""Deployment pages: the list, the deploy form (from a model card), and a deployment's page with its live chart,
how to call it, Try it, and the change forms (rollback, challenger, stop/resume, settings, tokens).

Every change goes through services.py, which checks the permission and writes the audit event; these views only
collect the input and show the outcome.
"""

from __future__ import annotations

import json
import math
import pprint
import shlex
from collections import defaultdict
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.db.models.functions import Mod, TruncMinute
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require
from apps.approvals.forms import apply_service_errors
from apps.approvals.models import Environment
from apps.core.charts import Figure
from apps.core.views import redirect_after_post
from apps.deployments import services
from apps.deployments.forms import NEW, ChallengerForm, DeployForm, RollbackForm, SettingsForm, StatusForm, TokenForm
from apps.deployments.models import Deployment, PredictionLog
from apps.registry.evidence.predictor import input_columns, reference_values
from apps.registry.models import ModelVersion

PAGE_SIZE = 25
LIVE_MINUTES = 60
LATENCY_SAMPLE = 4_000  # latency percentiles read about this many rows, spread over the hour; counts are exact
EVENTS_SHOWN = 100
BLUE, ORANGE, RED = "#0b5cad", "#b35900", "#b02a37"


def _deployments():
    return Deployment.objects.select_related("project", "environment", "champion__model", "fallback__model",
                                             "challenger__model")


def _deployment_for(request, slug: str) -> Deployment:
    return get_object_or_404(_deployments().visible_to(request.user), slug=slug)


def _page_url(deployment: Deployment, anchor: str = "") -> str:
    return reverse("deployment-page", args=[deployment.slug]) + (f"#{anchor}" if anchor else "")


# --- The list ------------------------------------------------------------------------------------------------


@login_required
def deployment_list(request):
    user = request.user
    deployments = _deployments().visible_to(user).order_by("project__name", "name")
    projects = list(Project.objects.visible_to(user).order_by("name"))
    params = {key: request.GET.get(key, "") for key in ("project", "environment", "status")}
    if params["project"]:
        deployments = deployments.filter(project__slug=params["project"])
    if params["environment"]:
        deployments = deployments.filter(environment__slug=params["environment"])
    if params["status"] in Deployment.Status.values:
        deployments = deployments.filter(status=params["status"])
    page = Paginator(deployments, PAGE_SIZE).get_page(request.GET.get("page"))
    since = timezone.now() - timedelta(hours=1)
    # One query for the whole page: the (deployment, time) index answers it without reading the rows.
    counts = dict(PredictionLog.objects.filter(deployment__in=[d.pk for d in page], created_at__gte=since,
                                               source=PredictionLog.Source.ONLINE)
                  .exclude(role=PredictionLog.Role.SHADOW).order_by()
                  .values_list("deployment").annotate(n=Count("id")))
    for deployment in page:
        deployment.last_hour = counts.get(deployment.pk, 0)
    environments = (Environment.objects.filter(project__in=projects).order_by("name")
                    .values_list("slug", "name").distinct())
    return render(request, "deployments/list.html", {
        "page": page, "projects": projects, "environments": sorted(set(environments)),
        "statuses": Deployment.Status.choices, "filters": params, "filtered": any(params.values()),
        "querystring": urlencode({k: v for k, v in params.items() if v}),
    })


# --- Deploy (from a model card) --------------------------------------------------------------------------------


def _environment_rows(version: ModelVersion, form: DeployForm) -> list[dict]:
    rows = []
    for environment in form.fields["environment"].queryset:
        reason = services.refusal(version, environment)
        rows.append({"environment": environment, "refusal": reason,
                     "may_request": bool(reason) and environment.gated and version.is_servable,
                     "name": f"{version.model.name} ({environment.name})"})
    return rows


def _initial(version: ModelVersion, form: DeployForm, rows: list[dict]) -> dict:
    chosen = next((r["environment"] for r in rows if not r["refusal"]), rows[0]["environment"] if rows else None)
    if chosen is None:
        return {}
    # Where the model already runs in that environment, promoting is what people usually mean.
    existing = next((d for d in form.deployments if d.environment_id == chosen.pk
                     and d.champion.model_id == version.model_id and d.champion_id != version.pk), None)
    return {"environment": chosen.slug, "target": existing.slug if existing else NEW,
            "name": f"{version.model.name} ({chosen.name})"}


def _render_deploy(request, version: ModelVersion | None, form: DeployForm | None = None, *, status: int = 200,
                   refused: str = ""):
    context = {"version": version, "refused": refused}
    if version is not None:
        form = form or DeployForm(version=version)
        rows = _environment_rows(version, form)
        if not form.is_bound:
            form.initial = _initial(version, form, rows)
        context.update(form=form, rows=rows, model=version.model, project=version.model.project,
                       deployable=any(not r["refusal"] for r in rows),
                       selected=str(form["environment"].value() or ""))
    return render(request, "deployments/deploy.html", context, status=status)


def _version_from(request) -> ModelVersion | None:
    ref = request.GET.get("version") or request.POST.get("version")
    if not ref:
        return None
    try:
        return get_object_or_404(ModelVersion.objects.visible_to(request.user).select_related("model__project"),
                                 uuid=ref)
    except ValidationError:  # not a UUID
        raise Http404 from None


@login_required
def deploy(request):
    version = _version_from(request)
    if version is None:
        return _render_deploy(request, None)
    require(request.user, Action.DEPLOY, version)
    if request.method != "POST":
        return _render_deploy(request, version)
    form = DeployForm(request.POST, version=version)
    if not form.is_valid():
        return _render_deploy(request, version, form, status=400)
    data = form.cleaned_data
    existing = form.deployment()
    try:
        if existing is None:
            deployment = services.deploy(version.model.project, actor=request.user, name=data["name"],
                                         environment=data["environment"], version=version,
                                         description=data["description"])
            messages.success(request, f"{version} is deployed to {deployment.environment.name}.")
        else:
            deployment = services.promote(existing, version, actor=request.user, reason=data["reason"])
            messages.success(request, f"{version} is now the champion of {deployment.name}; "
                                      f"{deployment.fallback} is the fallback.")
    except services.NotDeployable as exc:
        form.add_error("environment", str(exc))
        return _render_deploy(request, version, form, status=409, refused=str(exc))
    except ValidationError as exc:
        apply_service_errors(form, exc, field_map={"model_version": "__all__"})
        return _render_deploy(request, version, form, status=400)
    return redirect_after_post(request, _page_url(deployment))


# --- A deployment's page ------------------------------------------------------------------------------------


def example_body(version: ModelVersion) -> dict:
    """A one-row dataframe_split body a caller can send as is: typical values of the champion's inputs."""
    columns = input_columns(version)
    if not columns:
        example = version.input_example or {}
        if example.get("columns") and example.get("data"):
            return {"dataframe_split": {"columns": example["columns"], "data": example["data"][:1]}}
        return {"dataframe_split": {"columns": [], "data": [[]]}}
    values = reference_values(version)
    blanks = {"string": "", "boolean": False, "double": 0.0, "float": 0.0}
    row = [values.get(c["name"], blanks.get(c.get("type"), 0)) for c in columns]
    return {"dataframe_split": {"columns": [c["name"] for c in columns], "data": [row]}}


def snippets(url: str, body: dict) -> dict:
    text = json.dumps(body, default=str)
    curl = (f"curl -sS -X POST {shlex.quote(url)} \\\n"
            '  -H "Authorization: Token $PORTAL_TOKEN" \\\n'
            "  -H 'Content-Type: application/json' \\\n"
            f"  -d {shlex.quote(text)}")
    payload = pprint.pformat(json.loads(text), sort_dicts=False, width=88).replace("\n", "\n    ")
    python = ("import os\n\nimport requests\n\n"
              "response = requests.post(\n"
              f"    {url!r},\n"
              "    headers={\"Authorization\": f\"Token {os.environ['PORTAL_TOKEN']}\"},\n"
              f"    json={payload},\n"
              "    timeout=30,\n)\n"
              "response.raise_for_status()\n"
              "print(response.headers[\"X-Request-ID\"], response.json()[\"predictions\"])\n")
    return {"curl": curl, "python": python, "body": json.dumps(body, indent=2, default=str)}


def _percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(share * len(values)) - 1))]


def live_stats(deployment: Deployment, *, now=None) -> dict:
    """Requests per minute and p50/p95 latency over the last hour, from the prediction log (online, not shadow)."""
    now = now or timezone.now()
    start = (now - timedelta(minutes=LIVE_MINUTES - 1)).replace(second=0, microsecond=0)
    logs = (PredictionLog.objects.filter(deployment=deployment, created_at__gte=start,
                                         source=PredictionLog.Source.ONLINE)
            .exclude(role=PredictionLog.Role.SHADOW))
    per_minute = {row["minute"]: row for row in logs.order_by().annotate(minute=TruncMinute("created_at"))
                  .values("minute").annotate(n=Count("id"), errors=Count("id", filter=~Q(status_code=200)))}
    latencies: dict = defaultdict(list)
    # A busy deployment logs thousands of calls a minute: every step-th record (by id, which follows the drain
    # order, not the latency) keeps the percentiles of every minute while the page reads ~LATENCY_SAMPLE rows.
    step = max(1, math.ceil(sum(row["n"] for row in per_minute.values()) / LATENCY_SAMPLE))
    timed = logs.exclude(latency_ms=None)
    if step > 1:
        timed = timed.annotate(pick=Mod("id", step)).filter(pick=0)
    sample = list(timed.order_by().values_list("created_at", "latency_ms"))
    for created_at, latency in sample:
        latencies[created_at.replace(second=0, microsecond=0)].append(latency)
    rows = []
    for index in range(LIVE_MINUTES):
        minute = start + timedelta(minutes=index)
        found = per_minute.get(minute) or {}
        values = sorted(latencies.get(minute, []))
        rows.append({"minute": minute, "requests": found.get("n", 0), "errors": found.get("errors", 0),
                     "p50": _percentile(values, 0.5), "p95": _percentile(values, 0.95)})
    everything = sorted(latency for _, latency in sample)
    return {"rows": rows, "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
            "p50": _percentile(everything, 0.5), "p95": _percentile(everything, 0.95),
            "sampled": step > 1, "sample_size": len(sample)}


def live_figure(rows: list[dict]) -> Figure | None:
    """Bars of requests per minute, lines of p50 and p95 latency on a second axis; None without any request."""
    if not any(r["requests"] for r in rows):
        return None
    minutes = [timezone.localtime(r["minute"]).strftime("%Y-%m-%d %H:%M") for r in rows]
    fig = Figure()
    fig.add_bar(x=minutes, y=[r["requests"] for r in rows], name="Requests per minute", marker={"color": BLUE},
                hovertemplate="%{x}: %{y} requests<extra></extra>")
    for key, colour, dash in (("p50", ORANGE, "solid"), ("p95", RED, "dot")):
        fig.add_scatter(x=minutes, y=[r[key] for r in rows], name=f"{key} latency (ms)", yaxis="y2", mode="lines",
                        connectgaps=False, line={"color": colour, "dash": dash},
                        hovertemplate=f"%{{x}}: {key} %{{y:.1f}} ms<extra></extra>")
    fig.update_layout(
        height=260, margin={"l": 50, "r": 50, "t": 10, "b": 40}, plot_bgcolor="#ffffff", paper_bgcolor="#ffffff",
        legend={"orientation": "h", "y": -0.25}, bargap=0.1,
        yaxis={"title": "requests / min", "rangemode": "tozero"},
        yaxis2={"title": "latency (ms)", "overlaying": "y", "side": "right", "rangemode": "tozero",
                "showgrid": False})
    return fig


def _live_context(deployment: Deployment) -> dict:
    stats = live_stats(deployment)
    return {"deployment": deployment, "live": stats, "live_figure": live_figure(stats["rows"])}


def _version_state(version: ModelVersion | None, deployment: Deployment) -> dict | None:
    if version is None:
        return None
    refusal = services.refusal(version, deployment.environment)
    environment = deployment.environment
    if refusal:
        label = refusal
    elif environment.gated:
        label = f"Approved for {environment.name}"
    else:
        label = f"No approval needed in {environment.name}"
    return {"version": version, "ok": refusal is None, "label": label}


def _render_page(request, deployment: Deployment, *, status: int = 200, **extra):
    user = request.user
    may_deploy = can(user, Action.DEPLOY, deployment)
    url = request.build_absolute_uri(reverse("api:deployment-invocations", args=[deployment.slug]))
    code = snippets(url, example_body(deployment.champion))
    context = {
        "deployment": deployment, "project": deployment.project, "environment": deployment.environment,
        "may_deploy": may_deploy, "may_predict": can(user, Action.PREDICT, deployment),
        "roles": [("Champion", "champion", _version_state(deployment.champion, deployment),
                   "Answers requests."),
                  ("Fallback", "fallback", _version_state(deployment.fallback, deployment),
                   "What a rollback switches to."),
                  ("Challenger", "challenger", _version_state(deployment.challenger, deployment),
                   deployment.get_challenger_mode_display() if deployment.challenger_id else "")],
        "invocations_url": url, "snippets": code,
        "history": services.history(deployment),
        "events": list(deployment.events.select_related("champion__model", "previous_champion__model",
                                                        "challenger__model", "actor")[:EVENTS_SHOWN]),
        "events_shown": EVENTS_SHOWN,
        **_live_context(deployment),
    }
    if may_deploy:
        context.update({
            "rollback_form": RollbackForm(), "challenger_form": ChallengerForm(deployment=deployment),
            "status_form": StatusForm(), "token_form": TokenForm(),
            "settings_form": SettingsForm(initial={"description": deployment.description,
                                                   "max_rows": deployment.max_rows,
                                                   "rate_limit_per_minute": deployment.rate_limit_per_minute}),
            "tokens": list(deployment.tokens.select_related("created_by")),
        })
    context.update(extra)
    return render(request, "deployments/detail.html", context, status=status)


@login_required
def deployment_page(request, slug: str):
    return _render_page(request, _deployment_for(request, slug))


@login_required
def live(request, slug: str):
    """The mini-chart, polled by htmx every 15 s."""
    return render(request, "deployments/_live.html", _live_context(_deployment_for(request, slug)))


# --- Changes (each a form on the page; errors re-render the page with the form bound) -----------------------


def _change(request, slug: str, form_class, key: str, work, success: str, anchor: str):
    deployment = _deployment_for(request, slug)
    require(request.user, Action.DEPLOY, deployment)
    form = form_class(request.POST, **({"deployment": deployment} if form_class is ChallengerForm else {}))
    if form.is_valid():
        try:
            outcome = work(deployment, form.cleaned_data)
        except services.NotDeployable as exc:
            form.add_error(None, str(exc))
        except ValidationError as exc:
            apply_service_errors(form, exc, field_map={"challenger": "version", "challenger_mode": "mode",
                                                       "challenger_share": "share", "expires_at": "expires_at"})
        else:
            if isinstance(outcome, dict):  # a page to show at once (a new token's key)
                return _render_page(request, _deployment_for(request, slug), **outcome)
            messages.success(request, success.format(deployment=outcome))
            return redirect_after_post(request, _page_url(deployment, anchor))
    return _render_page(request, deployment, status=400, **{key: form, "open_form": key})


@login_required
@require_POST
def rollback(request, slug: str):
    return _change(request, slug, RollbackForm, "rollback_form",
                   lambda d, data: services.rollback(d, actor=request.user, reason=data["reason"]),
                   "Rolled back: {deployment.champion} answers requests again.", "history")


@login_required
@require_POST
def challenger(request, slug: str):
    if request.POST.get("remove"):
        deployment = _deployment_for(request, slug)
        services.set_challenger(deployment, None, actor=request.user)
        messages.success(request, "The challenger is removed: the champion answers every request.")
        return redirect_after_post(request, _page_url(deployment, "roles"))
    return _change(request, slug, ChallengerForm, "challenger_form",
                   lambda d, data: services.set_challenger(d, data["version"], actor=request.user, mode=data["mode"],
                                                           share=data["share"] or 0),
                   "{deployment.challenger} is the challenger ({deployment.challenger_mode}).", "roles")


@login_required
@require_POST
def set_status(request, slug: str):
    active = request.POST.get("active") == "1"
    return _change(request, slug, StatusForm, "status_form",
                   lambda d, data: services.set_status(d, actor=request.user, active=active, reason=data["reason"]),
                   "{deployment.name} is " + ("serving again." if active else "stopped: calls answer 503."),
                   "status")


@login_required
@require_POST
def update_settings(request, slug: str):
    return _change(request, slug, SettingsForm, "settings_form",
                   lambda d, data: services.update(d, actor=request.user, **data),
                   "Settings saved.", "settings")


def _create_token(request, deployment: Deployment, data: dict) -> dict:
    token, key = services.create_token(deployment, actor=request.user, name=data["name"],
                                       expires_at=data.get("expires_at"))
    messages.success(request, f"Token “{token.name}” created. Copy its key now: it is not shown again.")
    return {"new_token": token, "new_key": key}


@login_required
@require_POST
def create_token(request, slug: str):
    return _change(request, slug, TokenForm, "token_form", lambda d, data: _create_token(request, d, data),
                   "", "tokens")


@login_required
@require_POST
def revoke_token(request, slug: str, token):
    deployment = _deployment_for(request, slug)
    instance = get_object_or_404(deployment.tokens, uuid=token)
    services.revoke_token(instance, actor=request.user)
    messages.success(request, f"Token “{instance.name}” is revoked: calls with it now answer 401.")
    return redirect_after_post(request, _page_url(deployment, "tokens"))


urlpatterns = [
    path("deployments/", deployment_list, name="deployment-list"),
    path("deployments/new/", deploy, name="deployment-new"),
    path("deployments/<slug:slug>/", deployment_page, name="deployment-page"),
    path("deployments/<slug:slug>/live/", live, name="deployment-live"),
    path("deployments/<slug:slug>/rollback/", rollback, name="deployment-rollback-form"),
    path("deployments/<slug:slug>/challenger/", challenger, name="deployment-challenger"),
    path("deployments/<slug:slug>/status/", set_status, name="deployment-status"),
    path("deployments/<slug:slug>/settings/", update_settings, name="deployment-settings"),
    path("deployments/<slug:slug>/tokens/", create_token, name="deployment-token-create"),
    path("deployments/<slug:slug>/tokens/<uuid:token>/revoke/", revoke_token, name="deployment-token-revoke-form"),
]
