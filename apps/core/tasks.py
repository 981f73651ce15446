"""Celery tasks of the core app: thin wrappers that take ids and call services."""

from __future__ import annotations

from celery import shared_task

from apps.core import services


@shared_task(name="apps.core.tasks.run_system_check_task")
def run_system_check_task(job_id: str) -> None:
    services.run_job(services.run_system_check, job_id)
