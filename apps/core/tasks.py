"""Celery tasks of the core app: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from apps.core import services


@shared_task(name="apps.core.tasks.run_system_check_task")
def run_system_check_task(job_id: str) -> None:
    try:
        services.run_system_check(job_id)
    except Exception as exc:
        services.fail_job(job_id, error=f"{type(exc).__name__}: {exc}")
        raise
