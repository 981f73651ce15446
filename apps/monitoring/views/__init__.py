"""Monitoring pages, one module per feature; `deployment_for` is how each finds its deployment."""

from __future__ import annotations

from django.shortcuts import get_object_or_404

from apps.deployments.models import Deployment


def deployment_for(request, slug: str) -> Deployment:
    """The deployment if the user may see its project; 404 otherwise (outsiders never learn it exists)."""
    # The training data's profile (its largest field) is not needed here: drift reads the reference profile.
    return get_object_or_404(
        Deployment.objects.visible_to(request.user).select_related(
            "project", "environment", "champion__model", "champion__training_dataset__dataset")
        .defer("champion__training_dataset__profile"), slug=slug)
