"""Job lifecycle: create and enqueue after commit, then start/progress/finish from inside tasks.

Transitions use conditional updates so a task delivered twice (acks_late) never runs a finished job
again and never moves a job backwards.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.models import Job

logger = logging.getLogger(__name__)


def create_job(kind: str, *, actor, project=None, params: dict | None = None, enqueue: Callable) -> Job:
    """Create a queued Job and hand its id to `enqueue` once the surrounding transaction commits."""
    job = Job.objects.create(kind=kind, created_by=actor, project=project, params=params or {})
    transaction.on_commit(lambda: enqueue(str(job.id)))
    return job


def start_job(job_id: str | uuid.UUID) -> bool:
    """Mark a queued job running. False if it is already finished (the task must then do nothing).

    A job found `running` is a redelivery after a worker died: it is restarted from the beginning,
    which every task must make safe.
    """
    updated = Job.objects.filter(pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
        status=Job.Status.RUNNING, started_at=timezone.now(), progress=0, error=""
    )
    return updated == 1


def report_progress(job_id: str | uuid.UUID, progress: int, message: str = "") -> None:
    progress = max(0, min(100, int(progress)))
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(progress=progress, message=message[:500])


def succeed_job(job_id: str | uuid.UUID, *, result: dict | list | None = None, message: str = "Done") -> None:
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        status=Job.Status.SUCCEEDED, progress=100, message=message[:500], result=result,
        finished_at=timezone.now(),
    )


def fail_job(job_id: str | uuid.UUID, *, error: str, message: str = "Failed") -> None:
    Job.objects.filter(pk=job_id).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.FAILED, message=message[:500], error=error, finished_at=timezone.now()
    )


def run_job(work: Callable[[str], None], job_id: str) -> None:
    """What every job task does: run the work; if it crashes, the job says so (then Celery logs it)."""
    try:
        work(job_id)
    except Exception as exc:
        fail_job(job_id, error=f"{type(exc).__name__}: {exc}")
        raise


# --- The system check: a real job that proves the worker, broker, database and stores work ------------


def start_system_check(*, actor) -> Job:
    from apps.core.tasks import run_system_check_task

    return create_job("system_check", actor=actor, enqueue=lambda job_id: run_system_check_task.delay(job_id))


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return f"{connection.vendor} reachable"


def _check_cache() -> str:
    from django.core.cache import cache

    key = f"system-check-{uuid.uuid4()}"
    cache.set(key, "ok", 30)
    ok = cache.get(key) == "ok"
    cache.delete(key)
    if not ok:
        raise RuntimeError("the cache did not return what was written")
    return "read and write work"


def _check_storage() -> str:
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    name = default_storage.save(f"system-check/{uuid.uuid4()}.txt", ContentFile(b"ok"))
    default_storage.delete(name)
    return "file storage writable"


def _check_mlflow() -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)
    experiments = client.search_experiments(max_results=5)
    return f"tracking store reachable ({len(experiments)} experiment(s))"


SYSTEM_CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("Database", _check_database),
    ("Cache", _check_cache),
    ("File storage", _check_storage),
    ("MLflow tracking store", _check_mlflow),
]


def run_system_check(job_id: str) -> None:
    """Run each check, reporting progress after each; the job fails if any check fails."""
    if not start_job(job_id):
        return
    results = []
    for index, (name, check) in enumerate(SYSTEM_CHECKS):
        report_progress(job_id, int(100 * index / len(SYSTEM_CHECKS)), f"Checking {name.lower()}…")
        started = time.monotonic()
        try:
            detail = check()
            ok = True
        except Exception as exc:  # a failed check is a result to report, not a crash
            logger.warning("system check %s failed: %s", name, exc)
            detail, ok = f"{type(exc).__name__}: {exc}", False
        results.append({"check": name, "ok": ok, "detail": detail,
                        "seconds": round(time.monotonic() - started, 3)})
    failed = [r["check"] for r in results if not r["ok"]]
    if failed:
        fail_job(job_id, error="Failed: " + ", ".join(failed), message=f"{len(failed)} check(s) failed")
        Job.objects.filter(pk=job_id).update(result={"checks": results})
    else:
        succeed_job(job_id, result={"checks": results}, message=f"All {len(results)} checks passed")
