"""Celery tasks of the datasets app: thin, idempotent wrappers over services."""

from __future__ import annotations

from celery import shared_task

from apps.core import services as jobs
from apps.datasets import services


@shared_task(name="apps.datasets.tasks.profile_version_task")
def profile_version_task(job_id: str) -> None:
    try:
        services.profile_version(job_id)
    except Exception as exc:
        jobs.fail_job(job_id, error=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="apps.datasets.tasks.anonymise_version_task")
def anonymise_version_task(job_id: str) -> None:
    try:
        services.anonymise(job_id)
    except Exception as exc:
        jobs.fail_job(job_id, error=f"{type(exc).__name__}: {exc}")
        raise
