"""Prediction log API beyond the list: one record (with the other records of its request) and the export.

`GET /api/v1/deployments/<slug>/predictions/<id>/` and
`GET /api/v1/deployments/<slug>/predictions/export/?format=csv|parquet&<the list's filters>` (admins, audited).
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import Action, can, token_allows
from apps.deployments import export
from apps.deployments.api import PREDICTION_FILTER_PARAMETERS, PredictionSerializer, prediction_filters
from apps.deployments.models import Deployment


def _deployment(request, slug: str) -> Deployment:
    """The deployment if the caller (and their token) may see it; else 404, as for any outsider."""
    deployment = get_object_or_404(Deployment.objects.visible_to(request.user).select_related("project"), slug=slug)
    if not token_allows(request.auth, deployment):
        raise exceptions.NotFound()
    return deployment


class _IgnoreFormatParameter(DefaultContentNegotiation):
    """`format` names the export's file format here, not one of DRF's renderers: errors are always JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type




class PredictionExportView(APIView):
    """The filtered prediction log as a file, one line per scored row (project admins; recorded in the audit
    trail). CSV is streamed as it is read; Parquet is written to a temporary file first."""

    content_negotiation_class = _IgnoreFormatParameter

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=list(export.FORMATS), description="csv (default) or parquet"),
                    *PREDICTION_FILTER_PARAMETERS],
        responses={(200, "text/csv"): OpenApiTypes.BINARY,
                   (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
                   400: OpenApiResponse(description="a bad filter or format, named in `errors`"),
                   403: OpenApiResponse(description="only project admins export the log")})
    def get(self, request, slug):
        deployment = _deployment(request, slug)
        if not can(request.user, Action.EXPORT_PREDICTIONS, deployment):
            raise exceptions.PermissionDenied("Only project admins can export the prediction log.")
        fmt = request.query_params.get("format") or "csv"
        if fmt not in export.FORMATS:
            raise exceptions.ValidationError({"format": [f"Use {' or '.join(export.FORMATS)} (got “{fmt[:20]}”)."]})
        records = prediction_filters(deployment.predictions.all(), request.query_params)
        return export.respond(deployment, records, actor=request.user, fmt=fmt, params=request.query_params)


class PredictionDetailView(APIView):
    """One logged record, with `related`: the other records of the same request (shadow, canary, batch chunks).
    Inputs, outputs and the error are null for roles that may not see personal data."""

    @extend_schema(responses={200: PredictionSerializer})
    def get(self, request, slug, record_id):
        deployment = _deployment(request, slug)
        record = get_object_or_404(deployment.predictions.select_related("model_version__model"),
                                   record_id=record_id)
        context = {"request": request, "deployment": deployment,
                   "show_data": can(request.user, Action.VIEW_PII, deployment)}
        related = (deployment.predictions.filter(request_id=record.request_id).exclude(pk=record.pk)
                   .select_related("model_version__model").order_by("created_at", "id")[:100])
        return Response({**PredictionSerializer(record, context=context).data,
                         "related": PredictionSerializer(related, many=True, context=context).data})


urlpatterns = [
    path("deployments/<slug:slug>/predictions/export/", PredictionExportView.as_view(),
         name="deployment-predictions-export"),
    path("deployments/<slug:slug>/predictions/<uuid:record_id>/", PredictionDetailView.as_view(),
         name="deployment-prediction-detail"),
]
