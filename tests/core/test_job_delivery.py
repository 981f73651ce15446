"""Job delivery under faults, without a worker: attempts and the poison-job limit, a broker that is down when a
job is created, and which stalled jobs the sweeper sends again (to a private filesystem queue it can read)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.core import services
from apps.core.models import Job
from apps.core.tasks import run_system_check_task
from tests.faults.brokers import filesystem_transport_options, free_port, use_broker

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(tmp_path):
    """A private filesystem broker; returns a function listing the job ids sent to it, oldest first."""
    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        def sent() -> list[str]:
            messages = [json.loads(f.read_text()) for f in sorted((folder / "queue").iterdir())]
            # Celery's message body (base64 JSON) is [args, kwargs, options]; a job task's only arg is the id.
            return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]

        yield sent


def test_each_start_counts_and_a_job_started_max_times_fails_with_the_reason(people, settings):
    settings.PORTAL_JOB_MAX_ATTEMPTS = 2
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    assert services.start_job(job.id) is True
    assert services.start_job(job.id) is True, "a redelivery after a killed worker runs it again"
    assert services.start_job(job.id) is False
    job.refresh_from_db()
    assert (job.status, job.attempts, job.message) == ("failed", 2, "Failed after 2 attempts")
    assert "started 2 times" in job.error and "Check the worker's log" in job.error
    assert services.start_job(job.id) is False
    assert Job.objects.get(pk=job.id).error == job.error, "failing it once is enough"


def test_finishing_says_whether_this_delivery_won(people):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    services.start_job(job.id)
    assert services.succeed_job(job.id) is True
    assert services.succeed_job(job.id) is False
    assert services.fail_job(job.id, error="late") is False


def test_submitting_while_the_broker_is_down_still_answers_202_and_leaves_the_job_queued(
        people, api_as, django_capture_on_commit_callbacks):
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    with use_broker(nothing_listens), django_capture_on_commit_callbacks(execute=True):
        response = api_as(people["viewer"]).post("/api/v1/jobs/system-check/")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert (job.status, job.enqueued_at, job.task) == ("queued", None, run_system_check_task.name)
    assert job.message == "Waiting for the job queue; the job will be sent again automatically."


def test_a_job_sent_to_the_broker_records_when(people, queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = services.start_system_check(actor=people["viewer"])
    job.refresh_from_db()
    assert job.enqueued_at is not None and queue() == [str(job.id)]


def test_the_sweeper_sends_again_only_what_may_be_lost(people, queue, settings):
    long_ago = timezone.now() - timedelta(minutes=settings.PORTAL_JOB_REQUEUE_MINUTES + 1)

    def make(**fields) -> str:
        return str(Job.objects.create(kind="system_check", created_by=people["viewer"],
                                      task=run_system_check_task.name, **fields).id)

    never_sent = make()
    lost = make(enqueued_at=long_ago)
    make(enqueued_at=timezone.now())  # just sent: a busy queue, not a lost message
    make(status=Job.Status.SUCCEEDED)
    make(status=Job.Status.RUNNING, worker="celery@a", enqueued_at=long_ago)  # another node is running it
    orphan = make(status=Job.Status.RUNNING, worker="celery@b", enqueued_at=long_ago)
    Job.objects.create(kind="legacy", created_by=people["viewer"])  # no task name: cannot be sent

    assert sorted(services.requeue_stalled_jobs()) == sorted([never_sent, lost])
    assert services.requeue_stalled_jobs() == [], "once sent, they wait their turn again"
    assert services.requeue_stalled_jobs(restarted_worker="celery@b") == [orphan]
    assert sorted(queue()) == sorted([never_sent, lost, orphan])


def test_requeue_jobs_command_reports_what_it_sent(people, queue, capsys):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"], task=run_system_check_task.name)
    call_command("requeue_jobs")
    assert f"Sent 1 job(s) again.\n  {job.id}" in capsys.readouterr().out
    assert queue() == [str(job.id)]


def test_a_job_sent_long_ago_is_not_sent_again_while_messages_still_wait_ahead_of_it(people, queue, settings):
    """A backlog is not a loss: a copy sent now could arrive while the first delivery runs the job."""
    long_ago = timezone.now() - timedelta(minutes=settings.PORTAL_JOB_REQUEUE_MINUTES + 1)
    waiting = Job.objects.create(kind="system_check", created_by=people["viewer"], task=run_system_check_task.name)
    services.requeue_stalled_jobs()  # its message now waits in the queue
    behind = Job.objects.create(kind="system_check", created_by=people["viewer"], task=run_system_check_task.name,
                                enqueued_at=long_ago)
    never_sent = Job.objects.create(kind="system_check", created_by=people["viewer"],
                                    task=run_system_check_task.name)
    assert services.requeue_stalled_jobs() == [str(never_sent.id)]
    assert queue() == [str(waiting.id), str(never_sent.id)]
    assert str(behind.id) not in queue()
