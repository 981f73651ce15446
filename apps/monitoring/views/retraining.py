"""Retraining pages: whether the champion can be refitted (and why not), "Retrain now", the runs with their progress
and their champion-vs-challenger comparison in plain words."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from apps.accounts.permissions import Action, can, require
from apps.core.views import redirect_after_post
from apps.deployments.models import Deployment
from apps.monitoring import retraining
from apps.monitoring.models import MonitoringSettings, RetrainingRun
from apps.monitoring.views import deployment_for

PAGE_SIZE = 10




def with_rows(run: RetrainingRun) -> RetrainingRun:
    """The run with its comparison as table rows (`run.rows`), for the templates."""
    run.rows = retraining.comparison_rows(run.comparison or {})
    return run


def panel_context(request, deployment: Deployment, runs=None) -> dict:
    """Context of `monitoring/_retraining_panel.html` (the monitoring page includes it too)."""
    retrainable, reason = retraining.retrainability(deployment.champion)
    runs = retraining.latest_runs(deployment) if runs is None else runs
    return {"deployment": deployment, "runs": [with_rows(r) for r in runs], "retrainable": retrainable,
            "reason": reason, "may_retrain": can(request.user, Action.RETRAIN, deployment),
            "import_url": reverse("model-import", args=[deployment.project.slug])}


@login_required
def page(request, slug: str):
    deployment = deployment_for(request, slug)
    runs = Paginator(retraining.runs_of(deployment), PAGE_SIZE).get_page(request.GET.get("page"))
    settings = MonitoringSettings.objects.filter(deployment=deployment).first() or MonitoringSettings(
        deployment=deployment)
    context = {**panel_context(request, deployment, runs=list(runs)), "page": runs, "project": deployment.project,
               "settings": settings}
    return render(request, "monitoring/retraining.html", context)


@login_required
@require_POST
def start(request, slug: str):
    deployment = deployment_for(request, slug)
    require(request.user, Action.RETRAIN, deployment)
    try:
        run = retraining.start_retraining(deployment, actor=request.user, trigger="manual")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if run.existing:
            messages.info(request, "A retraining run of this deployment is already under way: its progress shows "
                                   "below.")
        else:
            messages.success(request, f"Retraining of {run.base_version} started. The new version will wait for "
                                      "approval; the progress shows below.")
    return redirect_after_post(request, reverse("deployment-retraining", args=[deployment.slug]))


@login_required
def run_row(request, slug: str, run):
    """One run (polled by htmx while it runs)."""
    deployment = deployment_for(request, slug)
    instance = get_object_or_404(retraining.runs_of(deployment), uuid=run)
    return render(request, "monitoring/_retraining_run.html", {
        "deployment": deployment, "run": with_rows(instance), "rows": instance.rows,
        "compact": bool(request.GET.get("compact"))})


urlpatterns = [
    path("deployments/<slug:slug>/retraining/", page, name="deployment-retraining"),
    path("deployments/<slug:slug>/retraining/start/", start, name="deployment-retraining-start"),
    path("deployments/<slug:slug>/retraining/<uuid:run>/", run_row, name="deployment-retraining-run"),
]
