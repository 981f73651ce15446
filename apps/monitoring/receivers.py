"""Signals monitoring listens to: every new deployment starts with the default alert rules."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.signals import post_save

logger = logging.getLogger(__name__)


def _deployment_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    if not created or raw:  # raw: loading fixtures, which bring their own rules
        return
    from apps.monitoring import alerts

    # In the deployment's own transaction (a rolled-back deploy leaves no rules behind), inside a savepoint so a
    # failure here never undoes the deploy; the rules are idempotent, so a later call can add what is missing.
    try:
        with transaction.atomic():
            alerts.default_rules(instance)
    except Exception:
        logger.exception("Could not create the default alert rules of deployment %s", instance.slug)


def connect() -> None:
    from apps.deployments.models import Deployment

    post_save.connect(_deployment_saved, sender=Deployment, dispatch_uid="monitoring.default_alert_rules")
