"""Celery tasks of deployments: thin wrappers over services (beat: draining and pruning the prediction log)."""

from __future__ import annotations

from celery import shared_task

from apps.deployments import predlog


@shared_task(name="apps.deployments.tasks.drain_prediction_log_task", ignore_result=True)
def drain_prediction_log_task() -> int:
    return predlog.drain()


@shared_task(name="apps.deployments.tasks.prune_prediction_log_task", ignore_result=True)
def prune_prediction_log_task() -> int:
    return predlog.prune()


@shared_task(name="apps.deployments.tasks.prepare_batch_task", ignore_result=True)
def prepare_batch_task(job_id: str) -> None:
    """Batch scoring, first step: check and split the input, then send a group of chunk tasks."""
    from apps.core.services import run_job
    from apps.deployments import batch

    run_job(batch.prepare, job_id)


@shared_task(name="apps.deployments.tasks.score_batch_chunk_task", ignore_result=True)
def score_batch_chunk_task(job_id: str, index: int) -> None:
    """Batch scoring: one chunk (the last one to finish writes the result file)."""
    from apps.core.services import run_job
    from apps.deployments import batch

    run_job(lambda job: batch.score_chunk(job, index), job_id)
