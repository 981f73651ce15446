"""Registry pages: a project's models, one model with its versions, and the comparison of versions."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.urls import path

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require
from apps.registry import compare
from apps.registry.models import RegisteredModel


@login_required
def model_list(request, slug):
    project = get_object_or_404(Project, slug=slug)
    require(request.user, Action.VIEW_PROJECT, project)
    request.session["current_project"] = project.slug
    models = RegisteredModel.objects.filter(project=project).select_related("owner").prefetch_related("versions")
    query = request.GET.get("q", "").strip()
    if query:
        models = models.filter(name__icontains=query)
    page = Paginator(models.order_by("name"), 25).get_page(request.GET.get("page"))
    return render(request, "registry/model_list.html", {
        "project": project, "page": page, "query": query,
        "may_import": can(request.user, Action.IMPORT_MODEL, project),
    })


def _model_for(request, model_slug) -> RegisteredModel:
    model = get_object_or_404(RegisteredModel.objects.select_related("project", "owner", "created_by"),
                              slug=model_slug)
    require(request.user, Action.VIEW_PROJECT, model)
    request.session["current_project"] = model.project.slug
    return model


@login_required
def model_detail(request, model_slug):
    model = _model_for(request, model_slug)
    versions = list(model.versions.select_related("created_by", "training_dataset__dataset", "import_job")
                    .order_by("-number"))
    return render(request, "registry/model_detail.html", {
        "model": model, "project": model.project, "versions": versions,
        "chart": compare.metrics_chart(versions),
        "may_import": can(request.user, Action.IMPORT_MODEL, model),
    })


@login_required
def model_compare(request, model_slug):
    model = _model_for(request, model_slug)
    numbers = request.GET.getlist("v")
    error, report = "", None
    try:
        report = compare.compare_versions(model, compare.parse_numbers(",".join(numbers)), user=request.user)
    except ValidationError as exc:
        error = " ".join(exc.messages)
    chosen = [v for v in model.versions.order_by("number") if report and v.number in
              {s["number"] for s in report["versions"]}]
    return render(request, "registry/compare.html", {
        "model": model, "project": model.project, "report": report, "error": error,
        "chart": compare.metrics_chart(chosen) if chosen else None,
    }, status=400 if error else 200)


urlpatterns = [
    path("projects/<slug:slug>/models/", model_list, name="model-list"),
    path("models/<slug:model_slug>/", model_detail, name="model-detail"),
    path("models/<slug:model_slug>/compare/", model_compare, name="model-compare"),
]
