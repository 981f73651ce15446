"""Celery tasks of the registry: thin, idempotent wrappers over services."""

from __future__ import annotations

from celery import shared_task

from apps.core.services import run_job
from apps.registry import services


@shared_task(name="apps.registry.tasks.import_version_task")
def import_version_task(job_id: str) -> None:
    run_job(services.import_version, job_id)


@shared_task(name="apps.registry.tasks.explain_version_task")
def explain_version_task(job_id: str) -> None:
    from apps.registry import evidence

    run_job(evidence.explain_version, job_id)


@shared_task(name="apps.registry.tasks.validate_version_task")
def validate_version_task(job_id: str) -> None:
    from apps.registry import evidence

    run_job(evidence.validate_version, job_id)


@shared_task(name="apps.registry.tasks.optimise_version_task")
def optimise_version_task(job_id: str) -> None:
    from apps.registry import evidence

    run_job(evidence.optimise_version, job_id)


@shared_task(name="apps.registry.tasks.sync_mlflow_task")
def sync_mlflow_task() -> None:
    """Beat: import new versions of followed MLflow models, for every project that follows one."""
    from apps.registry import mlflow_source

    mlflow_source.sync_followed_models()


@shared_task(name="apps.registry.tasks.compare_baselines_task")
def compare_baselines_task(job_id: str) -> None:
    from apps.registry.evidence import baselines

    run_job(baselines.compare_baselines, job_id)
