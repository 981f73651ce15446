"""Guidance API: a model version's readiness checklist, and the caller's first-run tour."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from apps.accounts.permissions import can_see, token_allows
from apps.guidance import readiness, tour
from apps.registry.models import ModelVersion


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def version_readiness(request, model_slug: str, number: int):
    """The eight readiness items of one version: done or missing, why, and where to fix it (if you may)."""
    version = get_object_or_404(ModelVersion.objects.visible_to(request.user).select_related("model__project"),
                                model__slug=model_slug, number=number)
    if not token_allows(request.auth, version) or not can_see(request.user, version):
        raise Http404
    return Response(readiness.for_version(version, request.user).as_dict())


def _tour_state(user) -> dict:
    role = tour.tour_role(user)
    return {"role": role, "show": tour.should_show(user, role),
            "steps": [{"title": s["title"], "text": s["text"], "url": s["url"]} for s in tour.steps(role)]}


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def tour_state(request):
    return Response(_tour_state(request.user))


@api_view(["POST"])
@permission_classes([IsAuthenticated])
def tour_dismiss(request):
    tour.dismiss(request.user)
    return Response(_tour_state(request.user))
