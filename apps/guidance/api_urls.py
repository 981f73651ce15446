"""Guidance API routes (included under /api/v1/ by portal/urls.py)."""

from django.urls import path

from apps.guidance import api

urlpatterns = [
    path("models/<slug:model_slug>/versions/<int:number>/readiness/", api.version_readiness,
         name="model-version-readiness"),
    path("guidance/tour/", api.tour_state, name="guidance-tour"),
    path("guidance/tour/dismiss/", api.tour_dismiss, name="guidance-tour-dismiss"),
]
