"""Celery tasks of the approvals app: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from apps.approvals import services


@shared_task(name="apps.approvals.tasks.expire_approvals_task")
def expire_approvals_task() -> int:
    """Beat: pending requests past their deadline and approvals past their validity become expired."""
    return services.expire_due()


@shared_task(name="apps.approvals.tasks.remind_pending_task")
def remind_pending_task() -> int:
    """Beat (daily): remind deciders of requests waiting too long; tell owners of approvals about to expire."""
    from apps.approvals import notifications

    return notifications.remind_pending()
