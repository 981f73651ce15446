"""Guidance API: a model version's readiness checklist, and the caller's first-run tour."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from apps.accounts.permissions import can_see, token_allows
from apps.guidance import readiness, tour
from apps.registry.models import ModelVersion

_ITEM = inline_serializer("ReadinessItem", {
    "key": serializers.CharField(), "label": serializers.CharField(), "done": serializers.BooleanField(),
    "sentence": serializers.CharField(), "fix_url": serializers.CharField(allow_null=True),
    "fix_label": serializers.CharField(allow_null=True), "who": serializers.CharField(allow_null=True)},
    many=True)
READINESS = inline_serializer("Readiness", {
    "model": serializers.CharField(), "version": serializers.IntegerField(), "ready": serializers.IntegerField(),
    "total": serializers.IntegerField(), "complete": serializers.BooleanField(), "items": _ITEM})
TOUR = inline_serializer("Tour", {
    "role": serializers.CharField(), "show": serializers.BooleanField(),
    "steps": inline_serializer("TourStep", {"title": serializers.CharField(), "text": serializers.CharField(),
                                            "url": serializers.CharField()}, many=True)})


@extend_schema(responses=READINESS)
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


@extend_schema(responses=TOUR)
@api_view(["GET"])
@permission_classes([IsAuthenticated])
def tour_state(request):
    return Response(_tour_state(request.user))


@extend_schema(request=None, responses=TOUR)
@api_view(["POST"])
@permission_classes([IsAuthenticated])
def tour_dismiss(request):
    tour.dismiss(request.user)
    return Response(_tour_state(request.user))
