"""Celery tasks of the core app: thin wrappers that take ids and call services."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.db import connection

from apps.core import services

logger = logging.getLogger(__name__)


@shared_task(name="apps.core.tasks.run_system_check_task")
def run_system_check_task(job_id: str) -> None:
    services.run_job(services.run_system_check, job_id)


@shared_task(name="apps.core.tasks.requeue_stalled_jobs_task")
def requeue_stalled_jobs_task() -> int:
    return len(services.requeue_stalled_jobs())


@worker_ready.connect
def _requeue_on_worker_start(sender=None, **kwargs) -> None:
    # A worker node that starts again after being killed left its running jobs orphaned; jobs the broker
    # never got are sent too. A failure here must not stop the worker from serving.
    hostname = getattr(sender, "hostname", "") or ""
    try:
        services.requeue_stalled_jobs(restarted_worker=hostname)
    except Exception:
        logger.exception("could not look for stalled jobs at worker start")
    finally:
        connection.close()  # the main process runs no tasks (prefork); it need not hold a connection
