"""The system check job runs on a real Celery worker, and its progress reaches 100 where the UI/API read it."""

from __future__ import annotations

import time

import pytest

from apps.core.models import Job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _watch(job_id, *, timeout: float = 120) -> tuple[Job, list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if not seen or seen[-1] != (job.status, job.progress):
            seen.append((job.status, job.progress))
        if job.is_finished:
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"job did not finish in {timeout}s; states seen: {seen}")


def test_system_check_started_from_the_api_reaches_100_on_a_real_worker(
        celery_worker_process, people, api_as):
    api = api_as(people["viewer"])
    response = api.post("/api/v1/jobs/system-check/")
    assert response.status_code == 202
    job_url = response.json()["job"]["url"]
    assert response.json()["job"]["status"] == "queued"

    job, seen = _watch(response.json()["job"]["id"])

    assert job.status == Job.Status.SUCCEEDED, (job.error, celery_worker_process.read_text()[-2000:])
    assert job.progress == 100
    assert [c["check"] for c in job.result["checks"]] == ["Database", "Cache", "File storage",
                                                         "MLflow tracking store"]
    assert all(c["ok"] for c in job.result["checks"])
    # The worker marked it running before it finished (a warm worker can do both between two polls).
    assert job.started_at is not None and job.started_at <= job.finished_at, seen
    body = api.get(job_url).json()
    assert (body["status"], body["progress"], body["kind"]) == ("succeeded", 100, "system_check")


def test_a_finished_job_delivered_again_is_not_run_twice(celery_worker_process, people):
    from apps.core import services
    from apps.core.tasks import run_system_check_task

    job = services.start_system_check(actor=people["viewer"])
    finished, _ = _watch(job.id)
    run_system_check_task.delay(str(job.id))  # a duplicate delivery, as acks_late allows
    # The worker is a single FIFO consumer: once a later job has finished, the duplicate has been handled.
    _watch(services.start_system_check(actor=people["viewer"]).id)
    again = Job.objects.get(pk=job.id)
    assert (again.status, again.finished_at, again.result) == (finished.status, finished.finished_at,
                                                               finished.result)


def test_an_uploaded_dataset_is_profiled_by_the_worker(celery_worker_process, people, api_as, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.datasets.models import DatasetVersion
    from tests.datasets.conftest import PEOPLE_CSV

    api = api_as(people["scientist"])
    response = api.post("/api/v1/datasets/", {"project": "alpha", "name": "customers",
                                              "file": SimpleUploadedFile("people.csv", PEOPLE_CSV)},
                        format="multipart")
    assert response.status_code == 202, response.content
    job, seen = _watch(response.json()["job"]["id"])
    assert job.status == Job.Status.SUCCEEDED, (job.error, celery_worker_process.read_text()[-2000:])
    version = DatasetVersion.objects.get(dataset__uuid=response.json()["dataset"], number=1)
    assert version.status == "ready" and version.row_count == 200
    assert len({progress for _, progress in seen}) >= 2, f"progress was reported along the way: {seen}"
