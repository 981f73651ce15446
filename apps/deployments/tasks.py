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
