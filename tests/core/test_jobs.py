"""Jobs: safe transitions for redelivered tasks, the progress fragment htmx polls, the pages and API."""

from __future__ import annotations

import pytest

from apps.core import services
from apps.core.models import Job

pytestmark = pytest.mark.django_db


def test_a_finished_job_cannot_be_started_again(people):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    assert services.start_job(job.id) is True
    services.succeed_job(job.id, result={"x": 1})
    assert services.start_job(job.id) is False
    job.refresh_from_db()
    assert (job.status, job.progress, job.result) == ("succeeded", 100, {"x": 1})


def test_progress_is_clamped_and_only_moves_while_running(people):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    services.report_progress(job.id, 50)
    job.refresh_from_db()
    assert job.progress == 0, "a queued job has no progress to report"
    services.start_job(job.id)
    services.report_progress(job.id, 250, "almost")
    job.refresh_from_db()
    assert (job.progress, job.message) == (100, "almost")


def test_failing_keeps_the_error_and_a_failed_job_cannot_succeed(people):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    services.start_job(job.id)
    services.fail_job(job.id, error="disk full")
    services.succeed_job(job.id)
    job.refresh_from_db()
    assert (job.status, job.error) == ("failed", "disk full")


def test_progress_fragment_polls_while_running_and_stops_when_finished(people, client_as):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    services.start_job(job.id)
    services.report_progress(job.id, 40, "Checking cache…")
    client = client_as(people["viewer"])
    running = client.get(f"/jobs/{job.id}/", HTTP_HX_REQUEST="true")
    assert running.status_code == 200
    body = running.content.decode()
    assert 'hx-trigger="every 1s"' in body and 'value="40"' in body and "Checking cache" in body
    assert "<html" not in body, "htmx gets the fragment, not the whole page"
    services.succeed_job(job.id, result={"checks": []})
    done = client.get(f"/jobs/{job.id}/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done and 'value="100"' in done


def test_system_check_button_creates_a_job_and_opens_its_page(people, client_as, django_capture_on_commit_callbacks):
    client = client_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/jobs/system-check/")
    job = Job.objects.get(created_by=people["scientist"])
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.id}/"
    assert len(callbacks) == 1, "the task is enqueued only once the transaction commits"
    page = client.get(response["Location"]).content.decode()
    assert "System check" in page and "Waiting for a worker" in page


def test_my_jobs_lists_own_jobs_and_shows_an_empty_state_otherwise(people, client_as):
    Job.objects.create(kind="system_check", created_by=people["viewer"])
    assert "System check" in client_as(people["viewer"]).get("/jobs/").content.decode()
    assert "No jobs yet." in client_as(people["scientist"]).get("/jobs/").content.decode()


def test_job_api_shape_matches_the_contract(people, api_as):
    job = Job.objects.create(kind="system_check", created_by=people["viewer"])
    body = api_as(people["viewer"]).get(f"/api/v1/jobs/{job.id}/").json()
    assert {"id", "kind", "status", "progress", "message", "result", "error"} <= body.keys()
    assert api_as(people["viewer"]).get("/api/v1/jobs/?status=bogus").status_code == 400


def test_job_list_query_count_does_not_grow_with_rows(people, client_as, django_assert_max_num_queries):
    client = client_as(people["viewer"])
    Job.objects.create(kind="system_check", created_by=people["viewer"])
    client.get("/jobs/")
    for _ in range(20):
        Job.objects.create(kind="system_check", created_by=people["viewer"])
    with django_assert_max_num_queries(12):
        client.get("/jobs/")
