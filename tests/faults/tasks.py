"""Test-only jobs for the fault tests, run by real workers started with `-I tests.faults.tasks`.

They use the product's job machinery (create_job/start_job/succeed_job/run_job) unchanged; only the work is
made up: long enough to be killed in the middle, with side effects the tests can count.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celery import shared_task
from django.db import transaction

from apps.audit import services as audit
from apps.core import services
from apps.core.models import Job

DONE_ACTION = "faults.slow_job_done"


def _slow_work(job_id: str) -> None:
    if not services.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    # One file per start: the test waits for it before killing, and counts the attempts.
    Path(job.params["dir"], f"started-{job.attempts}-{os.getpid()}").touch()
    steps = int(job.params.get("steps", 40))
    for step in range(steps):
        time.sleep(float(job.params.get("step_seconds", 0.1)))
        services.report_progress(job_id, 100 * step // steps, f"step {step + 1} of {steps}")
    # The side effect and the finish commit together: a second delivery that loses the race to finish
    # writes nothing, so the effect happens exactly once however often the job was started.
    with transaction.atomic():
        if services.succeed_job(job_id, result={"pid": os.getpid()}):
            audit.record(DONE_ACTION, details={"job": job_id}, actor_label="fault test")
            Path(job.params["dir"], f"done-{job.attempts}-{os.getpid()}").touch()


@shared_task(name="tests.faults.tasks.slow_job_task")
def slow_job_task(job_id: str) -> None:
    services.run_job(_slow_work, job_id)


def _poison_work(job_id: str) -> None:
    if not services.start_job(job_id):
        return
    # What a segfaulting C extension or the kernel's OOM killer does to the worker process.
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(name="tests.faults.tasks.poison_job_task")
def poison_job_task(job_id: str) -> None:
    services.run_job(_poison_work, job_id)
