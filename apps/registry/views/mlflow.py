"""Registry pages: browse the MLflow tracking server's registered models and import a version from it."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, render
from django.urls import NoReverseMatch, path, reverse

from apps.accounts.models import Project
from apps.accounts.permissions import Action, require
from apps.core.views import redirect_after_post
from apps.registry import mlflow_source


def _version_url(version) -> str:
    try:
        return reverse("model-detail", args=[version.model.slug])
    except NoReverseMatch:  # the model pages are built separately; until then, the job shows the progress
        return reverse("job-detail", args=[version.import_job_id])


def _import(request, project: Project):
    require(request.user, Action.IMPORT_MODEL, project)
    uri = request.POST.get("model_uri", "")
    try:
        version = mlflow_source.start_mlflow_import(project, actor=request.user, model_uri=uri,
                                                    name=request.POST.get("name") or None)
    except ValidationError as exc:
        for errors in exc.message_dict.values():
            for error in errors:
                messages.error(request, error)
    except mlflow_source.TrackingServerUnavailable as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Importing {uri} as {version}. The import runs in the background.")
        return redirect_after_post(request, _version_url(version))
    return redirect_after_post(request, request.get_full_path())


@login_required
def mlflow_browse(request, slug):
    project = get_object_or_404(Project, slug=slug)
    require(request.user, Action.VIEW_PROJECT, project)
    request.session["current_project"] = project.slug
    if request.method == "POST":
        return _import(request, project)
    search = request.GET.get("search", "")[:100]
    token = request.GET.get("page_token", "")[:2000]
    models, next_token, error = [], "", ""
    try:
        models, next_token = mlflow_source.list_server_models(search, token or None, project=project)
    except mlflow_source.TrackingServerUnavailable as exc:
        error = str(exc)
    except ValidationError as exc:
        error = " ".join(exc.messages)
    context = {
        "project": project,
        "models": models,
        "search": search,
        "error": error,
        "first_url": f"{request.path}?{urlencode({'search': search})}" if token else "",
        "next_url": f"{request.path}?{urlencode({'search': search, 'page_token': next_token})}" if next_token else "",
    }
    return render(request, "registry/mlflow_browse.html", context)


urlpatterns = [
    path("projects/<slug:slug>/mlflow/", mlflow_browse, name="mlflow-browse"),
]
