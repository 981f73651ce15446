"""Signals this app listens to: approvals (auto-deploy) and changes that make cached callers stale."""

from __future__ import annotations

from django.db.models.signals import post_delete, post_save


def _approval_granted(sender, request, **kwargs) -> None:
    from apps.deployments import services

    services.deploy_approved(request)


def _callers_changed(sender, **kwargs) -> None:
    from apps.deployments import serving

    serving.forget_callers()


def connect() -> None:
    from apps.accounts.models import ApiToken, Membership, User
    from apps.accounts.signals import credentials_changed
    from apps.approvals.signals import approval_granted
    from apps.deployments.models import DeploymentToken

    approval_granted.connect(_approval_granted, dispatch_uid="deployments.auto_deploy")
    credentials_changed.connect(_callers_changed, dispatch_uid="deployments.forget_callers")
    for model in (ApiToken, DeploymentToken, Membership, User):
        uid = f"deployments.forget_callers.{model.__name__}"
        post_save.connect(_callers_changed, sender=model, dispatch_uid=f"{uid}.save")
        post_delete.connect(_callers_changed, sender=model, dispatch_uid=f"{uid}.delete")
