"""Job lifecycle: create and enqueue after commit, then start/progress/finish from inside tasks.

Transitions use conditional updates so a task delivered twice (acks_late) never runs a finished job
again and never moves a job backwards. Delivery is at-least-once and survives faults: a job whose message
could not be sent (broker down) or was lost (worker killed) stays `queued`/`running` in the database, and
`requeue_stalled_jobs` (beat, `manage.py requeue_jobs`, and every worker start) sends it again; a job that
kills its worker every time fails after PORTAL_JOB_MAX_ATTEMPTS starts instead of looping forever.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from celery import Task, current_app, current_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from apps.core.models import Job

logger = logging.getLogger(__name__)

# What a broker that is down or unreachable raises when a message is published.
BROKER_ERRORS = (BrokerError, OSError)


def create_job(kind: str, *, actor, project=None, params: dict | None = None, enqueue: Task | Callable) -> Job:
    """Create a queued Job and send its id to a worker once the surrounding transaction commits.

    `enqueue` is the Celery task that runs the job (preferred: its name is kept on the row, so the job can be
    sent again if the broker loses it) or any callable taking the job id.
    """
    task_name = enqueue.name if isinstance(enqueue, Task) else ""
    job = Job.objects.create(kind=kind, created_by=actor, project=project, params=params or {}, task=task_name)
    transaction.on_commit(lambda: _send(job.id, enqueue))
    return job


def _send(job_id: uuid.UUID, enqueue: Task | Callable) -> bool:
    """Hand the job to the broker. A broker outage must not fail the request that made the job: the job
    stays queued, unsent, and the sweeper sends it once the broker is back."""
    try:
        if isinstance(enqueue, Task):
            enqueue.delay(str(job_id))
        else:
            enqueue(str(job_id))
    except BROKER_ERRORS as exc:
        logger.warning("job %s could not be queued (it will be sent again): %s: %s", job_id,
                       type(exc).__name__, exc)
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            message="Waiting for the job queue; the job will be sent again automatically.")
        return False
    Job.objects.filter(pk=job_id).update(enqueued_at=timezone.now())
    return True


def start_job(job_id: str | uuid.UUID) -> bool:
    """Mark a queued job running. False if it must not run (the task must then do nothing): it is finished,
    or it has already been started PORTAL_JOB_MAX_ATTEMPTS times (it is then failed here, with why).

    A job found `running` is a redelivery after a worker died: it is restarted from the beginning,
    which every task must make safe. Each start counts as an attempt, so a job that crashes its worker
    every time (a poison job) cannot be redelivered forever.
    """
    max_attempts = settings.PORTAL_JOB_MAX_ATTEMPTS
    request = getattr(current_task, "request", None)
    worker = (getattr(request, "hostname", None) or "")[:200]
    updated = Job.objects.filter(
        pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.RUNNING], attempts__lt=max_attempts,
    ).update(status=Job.Status.RUNNING, started_at=timezone.now(), progress=0, error="",
             attempts=F("attempts") + 1, worker=worker)
    if updated == 1:
        return True
    job = Job.objects.filter(pk=job_id).only("status", "attempts").first()
    if job is not None and not job.is_finished:
        logger.error("job %s was started %s times without finishing; failing it", job_id, job.attempts)
        fail_job(job_id, message=f"Failed after {job.attempts} attempts",
                 error=(f"The job was started {job.attempts} times and its worker process stopped every time "
                        "before it finished (it crashed, ran out of memory or was killed), so it is not tried "
                        "again. Check the worker's log for the cause, fix it, then start the job again."))
    return False


def report_progress(job_id: str | uuid.UUID, progress: int, message: str = "") -> None:
    progress = max(0, min(100, int(progress)))
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(progress=progress, message=message[:500])


def succeed_job(job_id: str | uuid.UUID, *, result: dict | list | None = None, message: str = "Done") -> bool:
    """Finish a running job. False if it was not running (another delivery finished it): a task that calls
    this in the same transaction as its last writes can roll them back then, so they happen once."""
    return Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        status=Job.Status.SUCCEEDED, progress=100, message=message[:500], result=result,
        finished_at=timezone.now(),
    ) == 1


def fail_job(job_id: str | uuid.UUID, *, error: str, message: str = "Failed") -> bool:
    return Job.objects.filter(pk=job_id).exclude(status__in=Job.FINISHED).update(
        status=Job.Status.FAILED, message=message[:500], error=error, finished_at=timezone.now()
    ) == 1


def run_job(work: Callable[[str], None], job_id: str) -> None:
    """What every job task does: run the work; if it crashes, the job says so (then Celery logs it)."""
    try:
        work(job_id)
    except Exception as exc:
        fail_job(job_id, error=f"{type(exc).__name__}: {exc}")
        raise


# --- Sending again what a broker outage or a killed worker lost ---------------------------------------


def requeue_stalled_jobs(*, restarted_worker: str = "") -> list[str]:
    """Send again every job that should be on its way to a worker but may not be; returns their ids.

    - queued and never sent (the broker was down when it was created): at once;
    - queued and sent more than PORTAL_JOB_REQUEUE_MINUTES ago but never started (the broker lost the
      message, e.g. Redis restarted without persistence), unless messages are still waiting in the queue
      (then it may only be behind them); start_job lets only one delivery of a queued job run;
    - running on `restarted_worker` (called as that worker node starts): its previous process was killed
      mid-job and, on brokers without redelivery (filesystem) or until Redis's visibility timeout, nobody
      else will run it.
    Jobs created with a plain callable instead of a task have no task name and cannot be sent again.
    """
    stale = timezone.now() - timedelta(minutes=settings.PORTAL_JOB_REQUEUE_MINUTES)
    if not _messages_waiting():  # none waiting, or the broker cannot say: a job sent long ago was lost
        due = Q(status=Job.Status.QUEUED) & (Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
    else:
        # Messages are still waiting: a job sent long ago may simply be behind them (a backlog, not a loss).
        # Sending it again would let the copy arrive while the first delivery runs it, and start_job would
        # then restart it (it cannot tell that copy from a redelivery after a crash). Only never-sent jobs.
        due = Q(status=Job.Status.QUEUED, enqueued_at__isnull=True)
    if restarted_worker:
        due |= Q(status=Job.Status.RUNNING, worker=restarted_worker)
    sent = []
    for job in Job.objects.filter(due).exclude(task="").only("id", "task").order_by("created_at"):
        try:
            current_app.send_task(job.task, args=[str(job.id)])
        except BROKER_ERRORS as exc:
            logger.warning("the broker is unreachable, stalled jobs stay queued until the next sweep: %s", exc)
            break
        Job.objects.filter(pk=job.id).update(enqueued_at=timezone.now())
        sent.append(str(job.id))
    unknown = Job.objects.filter(due, task="").count()
    if unknown:
        logger.warning("%s stalled job(s) have no task name and cannot be sent again", unknown)
    if sent:
        logger.info("sent %s stalled job(s) again: %s", len(sent), ", ".join(sent))
    return sent


def _messages_waiting() -> int | None:
    """How many messages wait in the default queue (None if the broker cannot say)."""
    try:
        with current_app.connection_for_write() as conn:
            declared = conn.default_channel.queue_declare(queue=current_app.conf.task_default_queue, passive=True)
        return declared.message_count
    except Exception as exc:  # an unreachable broker or a transport that cannot count: assume a loss
        logger.info("could not count the broker's waiting messages: %s: %s", type(exc).__name__, exc)
        return None


# --- The system check: a real job that proves the worker, broker, database and stores work ------------


def start_system_check(*, actor) -> Job:
    from apps.core.tasks import run_system_check_task

    return create_job("system_check", actor=actor, enqueue=run_system_check_task)


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
