"""Dataset pages: list and upload, a dataset's versions, the explore page and its data grid, PII, delete."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require
from apps.core import storage
from apps.core.views import form_errors_from, redirect_after_post
from apps.datasets import charts, grid, services
from apps.datasets.forms import UploadForm
from apps.datasets.grid import GridQueryError, read_page
from apps.datasets.models import Dataset, DatasetVersion, redact_profile
from apps.datasets.pii import KIND_LABELS


def _upload(request, project: Project, form: UploadForm, dataset: Dataset | None):
    try:
        version, created = services.upload(project, actor=request.user, name=form.cleaned_data["name"],
                                           uploaded=form.cleaned_data["file"], dataset=dataset,
                                           description=form.cleaned_data["description"])
        dataset = version.dataset
    except ValidationError as exc:
        form_errors_from(exc, form)
        return None
    if created:
        messages.success(request, f"Uploaded {dataset.name} v{version.number}. Profiling has started.")
    else:
        messages.info(
            request, f"This file is identical to {dataset.name} v{version.number}; no new version was created."
        )
    return redirect_after_post(request, _version_url(version))


def _version_url(version: DatasetVersion) -> str:
    return reverse("dataset-version", args=[version.dataset.uuid, version.number])


@login_required
def dataset_list(request, slug):
    project = get_object_or_404(Project, slug=slug)
    require(request.user, Action.VIEW_PROJECT, project)
    request.session["current_project"] = project.slug
    may_upload = can(request.user, Action.UPLOAD_DATA, project)
    form = UploadForm()
    if request.method == "POST":
        require(request.user, Action.UPLOAD_DATA, project)
        if too_large := services.upload_too_large(request):
            return HttpResponse(too_large, status=413, content_type="text/plain; charset=utf-8")
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid() and (response := _upload(request, project, form, None)):
            return response
        if request.htmx:
            return render(request, "datasets/_upload_form.html", {"form": form, "action": request.path})
    datasets = Dataset.objects.filter(project=project).select_related("created_by").prefetch_related("versions")
    return render(
        request,
        "datasets/dataset_list.html",
        {"project": project, "datasets": datasets, "form": form, "may_upload": may_upload},
    )


def _dataset_for(request, dataset_id) -> Dataset:
    dataset = get_object_or_404(Dataset.objects.select_related("project"), uuid=dataset_id)
    require(request.user, Action.VIEW_PROJECT, dataset.project)
    return dataset


@login_required
def dataset_detail(request, dataset_id):
    dataset = _dataset_for(request, dataset_id)
    form = UploadForm(fixed_name=dataset.name)
    if request.method == "POST":
        require(request.user, Action.UPLOAD_DATA, dataset.project)
        if too_large := services.upload_too_large(request):
            return HttpResponse(too_large, status=413, content_type="text/plain; charset=utf-8")
        form = UploadForm(request.POST, request.FILES, fixed_name=dataset.name)
        if form.is_valid() and (response := _upload(request, dataset.project, form, dataset)):
            return response
        if request.htmx:
            return render(request, "datasets/_upload_form.html", {"form": form, "action": request.path})
    return render(
        request,
        "datasets/dataset_detail.html",
        {
            "dataset": dataset,
            "project": dataset.project,
            "form": form,
            "versions": dataset.versions.select_related("created_by", "parent"),
            "may_upload": can(request.user, Action.UPLOAD_DATA, dataset.project),
            "may_delete": can(request.user, Action.DELETE_DATA, dataset.project),
        },
    )


def _version_for(request, dataset_id, number) -> DatasetVersion:
    dataset = _dataset_for(request, dataset_id)
    return get_object_or_404(
        DatasetVersion.objects.select_related("dataset__project", "profile_job", "created_by"),
        dataset=dataset,
        number=number,
    )


@login_required
def version_detail(request, dataset_id, number):
    version = _version_for(request, dataset_id, number)
    if request.htmx and request.GET.get("status"):
        if version.status == DatasetVersion.Status.PROFILING:
            return render(
                request,
                "components/job_progress.html",
                {"job": version.profile_job, "poll_url": request.get_full_path()},
            )
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    if version.status == DatasetVersion.Status.READY:
        # Load the rows in the background while this page renders: the grid asks for them right after.
        grid.warm(str(version.uuid), lambda: storage.open_stream(version.parquet_name))
    hidden = version.hidden_columns_for(request.user)
    profile = redact_profile(version.profile, hidden)
    profile = _Quiet(profile) if profile is not None else None
    columns = _with_pii_labels([_Quiet(c) for c in (profile or {}).get("columns", [])])
    return render(
        request,
        "datasets/version_detail.html",
        {
            "version": version,
            "dataset": version.dataset,
            "project": version.project,
            "profile": profile,
            "hidden": hidden,
            "columns": columns,
            "column_charts": [(c, figure, f"column-chart-{i}") for i, c in enumerate(columns)
                              if not c.get("hidden") and (figure := charts.column_figure(c)) is not None],
            "heatmap": charts.correlation_figure(profile.get("correlations")) if profile else None,
            "may_reveal": can(request.user, Action.REVEAL_PII, version),
            "may_anonymise": can(request.user, Action.UPLOAD_DATA, version),
            "missing_cells_pct": _missing_cells_pct(profile),
        },
    )


class _Quiet(dict):
    """A profile (or column) dict for templates. A lookup that fails (`c.hidden` on a column that is not hidden)
    is logged by Django at DEBUG with the object's repr, which would copy a column's most common values, personal
    data included, into the logs: the repr names the column only."""

    def __repr__(self) -> str:
        return f"<profile {self.get('name', '')}>".replace(" >", ">")


def _with_pii_labels(columns: list[dict]) -> list[dict]:
    """The columns, each PII finding given a readable name ("e-mail addresses") for the page."""
    for column in columns:
        if column.get("pii"):
            column["pii_label"] = KIND_LABELS.get(column["pii"]["kind"], column["pii"]["kind"])
    return columns


def _missing_cells_pct(profile: dict | None) -> float | None:
    if not profile or not profile.get("row_count") or not profile.get("columns"):
        return None
    missing = sum(c.get("missing") or 0 for c in profile["columns"])
    return round(100 * missing / (profile["row_count"] * len(profile["columns"])), 1)


def grid_params(query) -> dict:
    """Read the data grid's query parameters (shared by the page and the API).

    Besides `page`, `page_size`, `sort`, `desc` and `filter[<column>]`, the grid form sends `sort_by`
    (a header clicked: sort by it, or flip the direction if it already is) and `nav` (prev/next).
    """

    def _int(name: str, default: int) -> int:
        raw = query.get(name) or default
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise GridQueryError(f"{name} must be a whole number, not “{raw}”.") from None

    page, sort = _int("page", 1), query.get("sort") or None
    descending = query.get("desc") in {"1", "true", "yes"}
    if query.get("sort_by"):
        descending = query["sort_by"] == sort and not descending
        sort, page = query["sort_by"], 1
    page += {"prev": -1, "next": 1}.get(query.get("nav", ""), 0)
    filters = {
        key[7:-1]: value
        for key, value in query.items()
        if key.startswith("filter[") and key.endswith("]") and value != ""
    }
    return {
        "page": max(1, page),
        "page_size": _int("page_size", 50),
        "sort": sort,
        "descending": descending,
        "filters": filters,
    }


def read_version_rows(version: DatasetVersion, user, params: dict):
    return read_page(
        str(version.uuid),
        lambda: storage.open_stream(version.parquet_name),
        hidden_columns=version.hidden_columns_for(user),
        **params,
    )


@login_required
def version_rows(request, dataset_id, number):
    version = _version_for(request, dataset_id, number)
    if version.status != DatasetVersion.Status.READY:
        return HttpResponse("The rows are available once profiling has finished.", status=409)
    error, page, params = None, None, {"sort": None, "descending": False, "filters": {}}
    try:
        params = grid_params(request.GET)
        page = read_version_rows(version, request.user, params)
    except GridQueryError as exc:
        error = str(exc)
    return render(
        request,
        "datasets/_grid.html",
        {"version": version, "grid": page, "error": error, **params},
        status=400 if error else 200,
    )


@login_required
@require_POST
def version_reveal(request, dataset_id, number):
    version = _version_for(request, dataset_id, number)
    require(request.user, Action.REVEAL_PII, version)
    column, reveal = request.POST.get("column", ""), request.POST.get("reveal") == "1"
    try:
        services.set_column_revealed(version, actor=request.user, column=column, revealed=reveal)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"“{column}” is now {'visible to' if reveal else 'hidden from'} viewers.")
    return redirect(_version_url(version))


@login_required
def dataset_delete(request, dataset_id):
    dataset = _dataset_for(request, dataset_id)
    require(request.user, Action.DELETE_DATA, dataset.project)
    if request.method == "POST":
        try:
            services.delete_dataset(dataset, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("dataset-detail", dataset_id=dataset.uuid)
        messages.success(request, f"Dataset “{dataset.name}” and its files were deleted.")
        return redirect("dataset-list", slug=dataset.project.slug)
    return render(
        request,
        "accounts/confirm.html",
        {
            "title": f"Delete the dataset “{dataset.name}”?",
            "body": f"All {dataset.versions.count()} version(s) and their files are deleted. The audit trail keeps "
            "a record of them. This cannot be undone.",
            "confirm_label": "Delete dataset",
            "danger": True,
            "cancel_url": reverse("dataset-detail", args=[dataset.uuid]),
        },
    )


@login_required
def version_anonymise(request, dataset_id, number):
    version = _version_for(request, dataset_id, number)
    require(request.user, Action.UPLOAD_DATA, version)
    columns = _with_pii_labels((version.profile or {}).get("columns", []))
    errors: list[str] = []
    if request.method == "POST":
        plan = {}
        for c in columns:
            method = request.POST.get(f"method-{c['name']}", "keep")
            step = {"method": method}
            if method == "generalise":
                if c["type"] == "datetime":
                    step["level"] = request.POST.get(f"level-{c['name']}", "month")
                elif request.POST.get(f"width-{c['name']}"):
                    step["width"] = request.POST.get(f"width-{c['name']}")
            plan[c["name"]] = step
        try:
            job = services.start_anonymisation(
                version, actor=request.user, plan=plan, description=request.POST.get("description", "")
            )
        except ValidationError as exc:
            errors = exc.messages
        else:
            messages.success(request, "Anonymisation started. The new version appears when it is done.")
            return redirect("job-detail", job_id=job.id)
    suggested = {c["name"]: ("hash" if c.get("pii") else "keep") for c in columns}
    chosen = {c["name"]: request.POST.get(f"method-{c['name']}", suggested[c["name"]]) for c in columns}
    return render(
        request,
        "datasets/anonymise.html",
        {
            "version": version,
            "dataset": version.dataset,
            "project": version.project,
            "errors": errors,
            "rows": [(c, chosen[c["name"]]) for c in columns],
        },
    )


@login_required
def dataset_compare(request, dataset_id):
    dataset = _dataset_for(request, dataset_id)
    ready = list(dataset.versions.filter(status=DatasetVersion.Status.READY).order_by("number"))
    numbers = [v.number for v in ready]
    report, error = None, None
    try:
        base_n = int(request.GET.get("base") or (numbers[-2] if len(numbers) > 1 else 0))
        other_n = int(request.GET.get("other") or (numbers[-1] if numbers else 0))
    except ValueError:
        base_n = other_n = 0
        error = "Choose two versions from the lists."
    by_number = {v.number: v for v in ready}
    if base_n in by_number and other_n in by_number:
        report = services.compare_versions(by_number[base_n], by_number[other_n], user=request.user)
    elif len(ready) < 2:
        error = "Comparing needs two profiled versions of this dataset."
    elif error is None:
        error = "Choose two profiled versions from the lists."
    return render(
        request,
        "datasets/compare.html",
        {
            "dataset": dataset,
            "project": dataset.project,
            "versions": ready,
            "base": base_n,
            "other": other_n,
            "report": report,
            "error": error,
        },
    )
