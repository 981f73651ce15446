"""Batch scoring pages: the panel on the deployment page (upload form + recent runs), every run of a deployment,
one run's progress row (polled by htmx), and the scored file's download."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse

from apps.accounts.permissions import Action, require
from apps.approvals.forms import apply_service_errors
from apps.core import storage
from apps.core.views import redirect_after_post
from apps.datasets.services import upload_too_large
from apps.deployments import batch
from apps.deployments.api_batch import result_missing, result_response
from apps.deployments.models import BatchRun, Deployment
from apps.registry.evidence.predictor import input_columns

RECENT_RUNS = 5
PAGE_SIZE = 25


class BatchForm(forms.Form):
    file = forms.FileField(required=False, label="File to score",
                           help_text="CSV, TSV, Parquet or Excel (.xlsx) with a header row.")
    dataset_version = forms.ModelChoiceField(queryset=None, required=False, to_field_name="uuid",
                                             label="…or a dataset version of this project",
                                             empty_label="— none —")
    keep_extra_columns = forms.BooleanField(
        required=False, label="Keep columns the model does not take (ids, labels) in the result",
        help_text="Without this, a column the model does not know is refused, as the API does.")

    def __init__(self, *args, deployment: Deployment, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = batch.dataset_versions_for(deployment)
        self.fields["file"].widget.attrs["accept"] = ".csv,.tsv,.tab,.txt,.parquet,.pq,.xlsx"

    def clean(self):
        data = super().clean()
        if not self.errors and bool(data.get("file")) == bool(data.get("dataset_version")):
            raise ValidationError("Choose a file to upload or a dataset version (one of the two).")
        return data


def _deployment_for(request, slug: str) -> Deployment:
    deployment = get_object_or_404(
        Deployment.objects.visible_to(request.user).select_related("project", "champion__model"), slug=slug)
    require(request.user, Action.PREDICT, deployment)
    return deployment


def _runs(deployment: Deployment):
    return deployment.batch_runs.select_related("deployment", "model_version__model", "job", "created_by")


def _context(deployment: Deployment, form: BatchForm | None = None) -> dict:
    return {"deployment": deployment, "form": form or BatchForm(deployment=deployment),
            "inputs": input_columns(deployment.champion), "runs": list(_runs(deployment)[:RECENT_RUNS]),
            "run_total": deployment.batch_runs.count(), "recent_runs": RECENT_RUNS,
            "max_upload": storage.format_size(settings.PORTAL_MAX_UPLOAD_BYTES)}


@login_required
def panel(request, slug: str):
    """The panel's content, loaded into the deployment page by htmx (and re-rendered after a start)."""
    deployment = _deployment_for(request, slug)
    return render(request, "deployments/batch_panel.html", _context(deployment))


def _start(request, deployment: Deployment) -> tuple[BatchForm, BatchRun | None]:
    form = BatchForm(request.POST, request.FILES, deployment=deployment)
    if too_large := upload_too_large(request):
        form.is_valid()
        form.add_error("file", too_large)
        return form, None
    if not form.is_valid():
        return form, None
    data = form.cleaned_data
    try:
        run = batch.start_batch(deployment, actor=request.user, uploaded=data.get("file"),
                                dataset_version=data.get("dataset_version"),
                                keep_extra_columns=data["keep_extra_columns"])
    except batch.BatchRefused as exc:
        form.add_error(None, str(exc))
    except ValidationError as exc:
        apply_service_errors(form, exc)
    else:
        return form, run
    return form, None


@login_required
def runs(request, slug: str):
    """Every batch run of the deployment (GET), and starting one (POST, from the panel or this page)."""
    deployment = _deployment_for(request, slug)
    form = None
    if request.method == "POST":
        form, run = _start(request, deployment)
        if run is not None:
            message = f"Scoring {run.source_name} with {run.model_version.model.name} v{run.model_version.number}."
            if request.htmx and request.headers.get("HX-Target") == "batch-panel":
                context = _context(deployment)
                context["started"] = message
                return render(request, "deployments/batch_panel.html", context)
            messages.success(request, message + " The progress shows below.")
            return redirect_after_post(request, reverse("deployment-batch", args=[deployment.slug]))
        if request.htmx and request.headers.get("HX-Target") == "batch-panel":
            # htmx swaps only 2xx answers by default; the form carries the errors.
            return render(request, "deployments/batch_panel.html", _context(deployment, form))
    page = Paginator(_runs(deployment), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {**_context(deployment, form), "page": page, "project": deployment.project}
    return render(request, "deployments/batch_runs.html", context, status=400 if form is not None else 200)


@login_required
def run_row(request, slug: str, run):
    """One run's row: polled by htmx every second while the job runs, then it stops asking."""
    deployment = _deployment_for(request, slug)
    instance = get_object_or_404(_runs(deployment), uuid=run)
    return render(request, "deployments/batch_run_row.html", {"run": instance, "deployment": deployment})


@login_required
def result(request, slug: str, run):
    deployment = _deployment_for(request, slug)
    instance = get_object_or_404(_runs(deployment), uuid=run)
    if reason := result_missing(instance):
        raise Http404(reason)
    return result_response(instance)


urlpatterns = [
    path("deployments/<slug:slug>/batch/", runs, name="deployment-batch"),
    path("deployments/<slug:slug>/batch/panel/", panel, name="deployment-batch-panel"),
    path("deployments/<slug:slug>/batch/<uuid:run>/", run_row, name="deployment-batch-run"),
    path("deployments/<slug:slug>/batch/<uuid:run>/result/", result, name="deployment-batch-result"),
]
