"""Celery tasks of monitoring: thin wrappers over the modules that do the work (most run under beat)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="apps.monitoring.tasks.rollup_task", ignore_result=True)
def rollup_task() -> int:
    from apps.monitoring import rollups

    return rollups.run()


@shared_task(name="apps.monitoring.tasks.reference_profile_task", ignore_result=True)
def reference_profile_task(job_id: str) -> None:
    from apps.core.services import run_job
    from apps.monitoring import reference

    run_job(reference.compute, job_id)


@shared_task(name="apps.monitoring.tasks.evaluate_alerts_task", ignore_result=True)
def evaluate_alerts_task() -> int:
    from apps.monitoring import alerts

    return alerts.evaluate_all()


@shared_task(name="apps.monitoring.tasks.deliver_webhooks_task", ignore_result=True)
def deliver_webhooks_task() -> int:
    from apps.monitoring import webhooks

    return webhooks.deliver_due()


@shared_task(name="apps.monitoring.tasks.retrain_task", ignore_result=True, acks_late=True)
def retrain_task(job_id: str) -> None:
    from apps.core.services import run_job
    from apps.monitoring import retraining

    run_job(retraining.run, job_id)


@shared_task(name="apps.monitoring.tasks.scheduled_retraining_task", ignore_result=True)
def scheduled_retraining_task() -> int:
    from apps.monitoring import retraining

    return retraining.start_scheduled()


@shared_task(name="apps.monitoring.tasks.weekly_digest_task", ignore_result=True)
def weekly_digest_task() -> int:
    from apps.monitoring import digest

    return digest.send_weekly()
