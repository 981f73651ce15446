"""Registry pages: a project's models, one model with its versions, and the comparison of versions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require
from apps.core.views import form_errors_from
from apps.registry import compare, services
from apps.registry.forms import ModelDetailsForm
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
        "may_edit": can(request.user, Action.EDIT_MODEL, model),
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


@login_required
def model_edit(request, model_slug):
    """Purpose, intended use, owner and risk: what the model card and the approvers' checklist read."""
    model = _model_for(request, model_slug)
    require(request.user, Action.EDIT_MODEL, model)
    form = ModelDetailsForm(request.POST or None, project=model.project,
                            initial=ModelDetailsForm.initial_from_model(model))
    back = request.POST.get("next") or request.GET.get("next") or ""  # e.g. the model card that linked here
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        back = ""
    if request.method == "POST" and form.is_valid():
        try:
            services.update_model(model, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, f"{model.name}: details saved.")
            return redirect(back) if back else redirect("model-detail", model.slug)
    return render(request, "registry/model_edit.html", {
        "model": model, "project": model.project, "form": form, "back": back,
    }, status=400 if form.errors else 200)


urlpatterns = [
    path("projects/<slug:slug>/models/", model_list, name="model-list"),
    path("models/<slug:model_slug>/", model_detail, name="model-detail"),
    path("models/<slug:model_slug>/compare/", model_compare, name="model-compare"),
    path("models/<slug:model_slug>/edit/", model_edit, name="model-edit"),
]
