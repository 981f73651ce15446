"""The packet's page (a download, or inline with ?inline=1) and its API twin (text/html)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, renderer_classes
from rest_framework.renderers import JSONRenderer, StaticHTMLRenderer

from apps.registry.api import get_version
from apps.registry.models import ModelVersion


def _packet_response(version: ModelVersion, user, *, inline: bool, via: str) -> HttpResponse:
    from apps.approvals.packet import build_packet

    try:
        html = build_packet(version, user=user, via=via)
    except PermissionDenied:
        raise Http404("No such model version.") from None  # members only: outsiders learn nothing
    response = HttpResponse(html, content_type="text/html; charset=utf-8")
    filename = f"{version.model.slug}-v{version.number}-audit-packet.html"
    response["Content-Disposition"] = f'{"inline" if inline else "attachment"}; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def packet_page(request, model_slug: str, number: int):
    version = get_object_or_404(ModelVersion.objects.visible_to(request.user).select_related("model"),
                                model__slug=model_slug, number=number)
    return _packet_response(version, request.user, inline=request.GET.get("inline") == "1", via="page")


@extend_schema(
    summary="The audit packet of a model version",
    description="One self-contained HTML document: model card, lineage, validation, approvals with every "
                "decision, sections contributed by other apps, and the audit trail with the hash-chain check.",
    parameters=[OpenApiParameter("inline", bool, description="serve inline instead of as an attachment")],
    responses={(200, "text/html"): str},
)
@api_view(["GET"])
@renderer_classes([JSONRenderer, StaticHTMLRenderer])
def packet_api(request, ref):
    version = get_version(request, ref)  # scoped to the caller's projects (and the token's project): else 404
    return _packet_response(version, request.user, inline=request.query_params.get("inline") == "1", via="api")


urlpatterns = [
    path("models/<slug:model_slug>/v<int:number>/audit-packet/", packet_page, name="audit-packet"),
]
api_urlpatterns = [
    path("model-versions/<uuid:ref>/audit-packet/", packet_api, name="model-version-audit-packet"),
]
