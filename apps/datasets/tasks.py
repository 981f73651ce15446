"""Celery tasks of the datasets app: thin, idempotent wrappers over services."""

from __future__ import annotations

from celery import shared_task

from apps.core.services import run_job
from apps.datasets import services


@shared_task(name="apps.datasets.tasks.profile_version_task")
def profile_version_task(job_id: str) -> None:
    run_job(services.profile_version, job_id)


@shared_task(name="apps.datasets.tasks.anonymise_version_task")
def anonymise_version_task(job_id: str) -> None:
    run_job(services.anonymise, job_id)
