"""Background jobs survive faults: a killed worker (child or main process), a job that kills its worker every
time, and a broker that is down when the job is submitted. Real workers, a real broker, the real database.

Exactly once is counted on the job's side effect (an audit event written in the same transaction that marks
the job succeeded) and on the number of times a worker finished it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core import services
from apps.core.models import Job
from tests.faults.conftest import wait_until
from tests.faults.tasks import DONE_ACTION, poison_job_task, slow_job_task

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _slow_job(people, tmp_path: Path, *, steps: int = 40) -> Job:
    return services.create_job("faults_slow", actor=people["scientist"], enqueue=slow_job_task,
                               params={"dir": str(tmp_path), "steps": steps, "step_seconds": 0.1})


def _finished(job_id, *, timeout: float, worker=None) -> Job:
    def done():
        job = Job.objects.get(pk=job_id)
        return job if job.is_finished else None

    try:
        return wait_until(done, timeout=timeout, what=f"job {job_id} to finish")
    except BaseException:
        if worker is not None:
            print(worker.log()[-4000:])
        raise


def _started(tmp_path: Path, attempt: int) -> None:
    wait_until(lambda: list(tmp_path.glob(f"started-{attempt}-*")), timeout=60, what=f"start #{attempt} of the job")


def _side_effects(job: Job) -> int:
    return AuditEvent.objects.filter(action=DONE_ACTION, details__job=str(job.id)).count()


def _no_second_run(job: Job, worker, people, tmp_path: Path) -> None:
    """Deliver the finished job again, sweep, and wait for a later job on the same single-slot worker:
    by then any extra delivery has been handled, and it must not have run the job again."""
    slow_job_task.delay(str(job.id))
    services.requeue_stalled_jobs(restarted_worker=worker.node)
    (tmp_path / "later").mkdir()
    later = _slow_job(people, tmp_path / "later", steps=1)
    assert _finished(later.id, timeout=60, worker=worker).status == Job.Status.SUCCEEDED


def test_killing_the_worker_child_mid_job_reruns_it_and_it_finishes_exactly_once(people, start_worker, tmp_path):
    worker = start_worker()
    job = _slow_job(people, tmp_path)
    _started(tmp_path, 1)
    time.sleep(0.5)  # well inside its ~4 s of work
    worker.kill_child()

    job = _finished(job.id, timeout=90, worker=worker)
    assert job.status == Job.Status.SUCCEEDED, (job.error, worker.log()[-3000:])
    assert job.attempts == 2, "the main process put the message back and a new child ran the job again"
    _no_second_run(job, worker, people, tmp_path)
    assert _side_effects(job) == 1
    assert len(list(tmp_path.glob("done-*"))) == 1
    assert Job.objects.get(pk=job.id).finished_at == job.finished_at


def test_killing_the_worker_main_process_mid_job_then_restarting_it_finishes_the_job_exactly_once(
        people, start_worker, tmp_path):
    worker = start_worker()
    job = _slow_job(people, tmp_path)
    _started(tmp_path, 1)
    time.sleep(0.5)
    worker.kill_main()  # its child dies with it; the filesystem broker forgets the message, Redis holds it unacked
    time.sleep(1)
    assert Job.objects.get(pk=job.id).status == Job.Status.RUNNING, "nothing finished it while no worker ran"

    worker.start()  # the same node again: at start it re-sends the jobs its killed incarnation was running
    job = _finished(job.id, timeout=90, worker=worker)
    assert job.status == Job.Status.SUCCEEDED, (job.error, worker.log()[-3000:])
    assert job.attempts == 2
    _no_second_run(job, worker, people, tmp_path)
    assert _side_effects(job) == 1
    assert len(list(tmp_path.glob("done-*"))) == 1


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts_and_the_worker_goes_on(
        people, start_worker, tmp_path, settings):
    worker = start_worker()
    job = services.create_job("faults_poison", actor=people["scientist"], enqueue=poison_job_task)

    job = _finished(job.id, timeout=120, worker=worker)
    assert job.status == Job.Status.FAILED
    assert job.attempts == settings.PORTAL_JOB_MAX_ATTEMPTS == 3
    assert job.message == "Failed after 3 attempts"
    assert "started 3 times" in job.error and "worker process stopped every time" in job.error
    assert worker.log().count("poison_job_task") >= 4, "three crashed runs, then the delivery that failed it"
    # The worker survived its poison job and still runs others.
    assert worker.process.poll() is None
    healthy = _slow_job(people, tmp_path, steps=1)
    assert _finished(healthy.id, timeout=60, worker=worker).status == Job.Status.SUCCEEDED


# --- The broker is down when a job is submitted ---------------------------------------------------------


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_job_submitted_while_redis_is_down_is_queued_and_runs_once_redis_is_back(
        people, api_as, private_broker, start_worker):
    redis = private_broker.redis
    redis.stop()
    api = api_as(people["viewer"])

    started = time.monotonic()
    response = api.post("/api/v1/jobs/system-check/")
    assert response.status_code == 202, response.content
    assert time.monotonic() - started < 10, "a broker outage costs the request a few retries, not a hang"
    body = response.json()["job"]
    assert body["status"] == "queued"
    job = Job.objects.get(pk=body["id"])
    assert (job.status, job.enqueued_at, job.task) == ("queued", None, "apps.core.tasks.run_system_check_task")
    assert "sent again automatically" in api.get(body["url"]).json()["message"]

    # Still down: the sweeper leaves it queued and says so, rather than failing it or crashing.
    assert services.requeue_stalled_jobs() == []
    assert Job.objects.get(pk=job.id).status == Job.Status.QUEUED

    redis.start()
    call_command("requeue_jobs")  # what beat does every minute
    assert Job.objects.get(pk=job.id).enqueued_at is not None
    worker = start_worker()
    job = _finished(job.id, timeout=90, worker=worker)
    assert job.status == Job.Status.SUCCEEDED, (job.error, worker.log()[-3000:])
    assert job.attempts == 1
    assert worker.log().count("succeeded in") == 1, "run once"


@pytest.mark.parametrize("broker_kind", ["redis"])
def test_a_job_whose_message_redis_lost_is_sent_again_by_a_starting_worker(people, client_as, private_broker,
                                                                           start_worker, settings):
    redis = private_broker.redis
    response = client_as(people["scientist"]).post("/jobs/system-check/")
    assert response.status_code == 302
    job = Job.objects.get(created_by=people["scientist"], kind="system_check")
    assert job.enqueued_at is not None
    redis.stop()  # no persistence: the queued message is gone
    redis.start()
    # Fresh sends are left alone (a busy queue is not a lost message)...
    assert services.requeue_stalled_jobs() == []
    # ...until they have waited PORTAL_JOB_REQUEUE_MINUTES without a worker starting them.
    Job.objects.filter(pk=job.id).update(
        enqueued_at=timezone.now() - timedelta(minutes=settings.PORTAL_JOB_REQUEUE_MINUTES + 1))
    worker = start_worker()  # its start-up sweep sends the job again
    job = _finished(job.id, timeout=90, worker=worker)
    assert job.status == Job.Status.SUCCEEDED, (job.error, worker.log()[-3000:])
    assert job.attempts == 1
