"""The prediction log pages: a deployment's log (filters, pagination, admins' export) and one record in detail.

Every member sees the metadata (time, status, latency, version, role, caller, rows); inputs, predictions and error
texts may hold personal data and are shown only to roles with Action.VIEW_PII. Filters are the API's
(`api.prediction_filters`), so the page, the API and the export select the same records.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from rest_framework.exceptions import ValidationError as ApiValidationError

from apps.accounts.permissions import Action, can, require
from apps.core.models import bulky_fields
from apps.deployments import export, predlog
from apps.deployments.api import RECORD_SENTINEL, prediction_filters
from apps.deployments.models import Deployment, DeploymentEvent, PredictionLog
from apps.registry.models import ModelVersion

PAGE_SIZE = 50
ROWS_PAGE_SIZE = 100
STATUS_CHOICES = [("", "Any"), ("ok", "OK (200)"), ("error", "Any error"), ("400", "400 bad input"),
                  ("413", "413 too large"), ("429", "429 rate limited"), ("502", "502 model failed"),
                  ("503", "503 stopped"), ("504", "504 timed out")]


class PredictionFilterForm(forms.Form):
    """The log's filters as a form (for labels and errors); the filtering itself is api.prediction_filters."""

    status = forms.ChoiceField(required=False, choices=STATUS_CHOICES)
    role = forms.ChoiceField(required=False, choices=[("", "Any"), *PredictionLog.Role.choices])
    source = forms.ChoiceField(required=False, choices=[("", "Any"), *PredictionLog.Source.choices])
    version = forms.ChoiceField(required=False, label="Model version")
    request_id = forms.CharField(required=False, label="Request id", max_length=64)

    def __init__(self, data, *, versions: list[tuple[str, str]]):
        super().__init__(data)
        # "from" and "to" are Python keywords: the same names as the API's query parameters, added here.
        self.fields["from"] = forms.CharField(required=False, label="From",
                                              widget=forms.DateInput(attrs={"type": "date"}))
        self.fields["to"] = forms.CharField(required=False, label="To (not included)",
                                            widget=forms.DateInput(attrs={"type": "date"}))
        self.fields["version"].choices = [("", "Any"), *versions]
        # A value typed into the URL still shows (and is checked by the filters, which say what is wrong).
        for name in ("status", "version"):
            value = (data or {}).get(name)
            if value and value not in dict(self.fields[name].choices):
                self.fields[name].choices = [*self.fields[name].choices, (value, value)]


def _deployment_for(request, slug: str) -> Deployment:
    deployment = get_object_or_404(
        Deployment.objects.visible_to(request.user).select_related("project", "environment", "champion__model"),
        slug=slug)
    require(request.user, Action.VIEW_PROJECT, deployment)
    request.session["current_project"] = deployment.project.slug
    return deployment


def _served_versions(deployment: Deployment) -> list[tuple[str, str]]:
    """The versions this deployment has served (from its history), as filter choices by number."""
    labels: dict[int, list[str]] = {}
    events = DeploymentEvent.objects.filter(deployment=deployment).select_related(
        "champion__model", "challenger__model").defer(*bulky_fields(ModelVersion, "champion", "challenger"))
    versions = [deployment.champion] + [v for e in events for v in (e.champion, e.challenger) if v is not None]
    for version in versions:
        label = f"{version.model.name} v{version.number}"
        if label not in labels.setdefault(version.number, []):
            labels[version.number].append(label)
    return [(str(number), " / ".join(labels[number])) for number in sorted(labels, reverse=True)]


def _filtered(deployment: Deployment, params, form: PredictionFilterForm | None = None):
    """The deployment's records under the filters in `params`; None (and errors on `form`) when a filter is bad."""
    try:
        return prediction_filters(deployment.predictions.all(), params)
    except ApiValidationError as exc:
        if form is not None:
            form.is_valid()  # binds cleaned_data so add_error can be used
            for name, messages in exc.detail.items():
                for message in messages:
                    form.add_error(name if name in form.fields else None, str(message))
        return None


def _querystring(params) -> str:
    query = params.copy()
    for name in ("page", "format"):
        query.pop(name, None)
    return query.urlencode()


def _truncate(text: str, length: int) -> str:
    """As the truncatechars filter: at most `length` characters, the last an ellipsis when cut."""
    return text if len(text) <= length else text[:length - 1] + "…"


def _list_rows(deployment: Deployment, records, *, show_data: bool) -> list[dict]:
    """What each row of the log page shows, formatted here: 50 rows of template filters and {% url %} tags cost
    more than the rest of the page together (~40 ms)."""
    detail = reverse("deployment-prediction", args=[deployment.slug, RECORD_SENTINEL])
    rows = []
    for record in records:
        version = record.model_version
        created = timezone.localtime(record.created_at)
        text = ""
        if show_data:
            text = _preview(record.outputs) if record.status_code == 200 else (record.error or "")
        rows.append({
            "record_id": record.record_id, "url": detail.replace(RECORD_SENTINEL, str(record.record_id)),
            "created": created.strftime("%Y-%m-%d %H:%M:%S"), "created_iso": created.isoformat(),
            "request_id": _truncate(record.request_id, 13),
            "version": f"{version.model.name} v{version.number}" if version is not None else "—",
            "role": record.get_role_display(), "source": record.get_source_display(), "status": record.status_code,
            "latency": "—" if record.latency_ms is None else f"{record.latency_ms:.1f}",
            "rows": record.row_count, "caller": record.caller or "—", "data": _truncate(text, 60),
        })
    return rows


def _preview(outputs) -> str:
    if isinstance(outputs, list):
        shown = ", ".join(str(v) for v in outputs[:3])
        return shown + (f", … ({len(outputs)} in all)" if len(outputs) > 3 else "")
    return "" if outputs is None else str(outputs)[:80]


@login_required
def prediction_list(request, slug):
    deployment = _deployment_for(request, slug)
    form = PredictionFilterForm(request.GET, versions=_served_versions(deployment))
    records = _filtered(deployment, request.GET, form)
    page = None
    show_data = can(request.user, Action.VIEW_PII, deployment)
    if records is not None:
        # The list shows a preview of the outputs at most: the logged inputs (up to a request's 10,000 rows) stay
        # in the database, and so do the outputs for someone who may not see them, and the versions' JSON.
        records = records.select_related("model_version__model").defer(
            "inputs", *(() if show_data else ("outputs",)), *bulky_fields(ModelVersion, "model_version"))
        page = Paginator(records, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = _list_rows(deployment, page.object_list if page else [], show_data=show_data)
    filtered = any(request.GET.get(name) for name in export.FILTERS)
    return render(request, "deployments/predictions.html", {
        "deployment": deployment, "project": deployment.project, "form": form, "page": page, "rows": rows,
        "show_data": show_data, "filtered": filtered, "querystring": _querystring(request.GET),
        "pending": predlog.pending(), "drain_seconds": settings.PORTAL_PREDICTION_DRAIN_SECONDS,
        "may_export": can(request.user, Action.EXPORT_PREDICTIONS, deployment),
    }, status=400 if records is None else 200)


def _input_table(record: PredictionLog) -> tuple[list[str], list[tuple[int, list, object]]]:
    """The request's rows as (columns, [(row number, values, prediction)]), rows numbered from 0 as sent."""
    logged = record.inputs if isinstance(record.inputs, dict) else {}
    names = None
    if record.model_version is not None:
        names = [c["name"] for c in (record.model_version.signature or {}).get("inputs") or [] if c.get("name")]
    columns = export._columns(logged, names)
    data = [row if isinstance(row, list) else [row] for row in logged.get("data") or []]
    count = max(len(data), record.row_count if record.outputs is not None else 0)
    return columns, [(i, data[i] if i < len(data) else [], export._prediction(record.outputs, i))
                     for i in range(count)]


@login_required
def prediction_detail(request, slug, record_id):
    deployment = _deployment_for(request, slug)
    record = get_object_or_404(deployment.predictions.select_related("model_version__model"), record_id=record_id)
    show_data = can(request.user, Action.VIEW_PII, deployment)
    columns, table = _input_table(record) if show_data else ([], [])
    rows = Paginator(table, ROWS_PAGE_SIZE).get_page(request.GET.get("rows")) if table else None
    related = (deployment.predictions.filter(request_id=record.request_id).exclude(pk=record.pk)
               .select_related("model_version__model").order_by("created_at", "id"))
    return render(request, "deployments/prediction_detail.html", {
        "deployment": deployment, "project": deployment.project, "record": record, "show_data": show_data,
        "columns": columns, "rows": rows, "related": related,
    })


@login_required
def prediction_export(request, slug):
    """The filtered log as CSV or Parquet (admins), audited: the page's export buttons."""
    deployment = _deployment_for(request, slug)
    if not can(request.user, Action.EXPORT_PREDICTIONS, deployment):
        raise PermissionDenied
    fmt = request.GET.get("format", "csv")
    if fmt not in export.FORMATS:
        return HttpResponseBadRequest("format: use csv or parquet.", content_type="text/plain; charset=utf-8")
    try:
        records = prediction_filters(deployment.predictions.all(), request.GET)
    except ApiValidationError as exc:
        # Dropping a bad filter would export more than was asked for.
        return HttpResponseBadRequest(
            "; ".join(f"{name}: {' '.join(map(str, messages))}" for name, messages in exc.detail.items()),
            content_type="text/plain; charset=utf-8")
    return export.respond(deployment, records, actor=request.user, fmt=fmt, params=request.GET)


urlpatterns = [
    path("deployments/<slug:slug>/predictions/", prediction_list, name="deployment-predictions"),
    path("deployments/<slug:slug>/predictions/export/", prediction_export, name="deployment-predictions-export"),
    path("deployments/<slug:slug>/predictions/<uuid:record_id>/", prediction_detail,
         name="deployment-prediction"),
]
