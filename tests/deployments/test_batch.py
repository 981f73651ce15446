"""Batch scoring: a file or dataset version scored in chunks, checked first, logged, downloadable; who may do it."""

from __future__ import annotations

import io
import re
import time

import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.models import Membership
from apps.core.models import Job
from apps.deployments import batch, predlog, services
from apps.deployments.models import BatchRun, PredictionLog
from apps.registry.evidence import load_predictor
from tests.deployments.conftest import FEATURES, training_frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployment(project, people, sandbox, version):
    return services.deploy(project, actor=people["scientist"], name="Churn scoring", environment=sandbox,
                           version=version)


@pytest.fixture(autouse=True)
def _small_chunks(settings):
    settings.PORTAL_BATCH_CHUNK_ROWS = 70  # 200 rows -> chunks of 70, 70, 60


def csv_file(frame: pd.DataFrame, name: str = "customers.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, frame.to_csv(index=False).encode(), content_type="text/csv")


def start(api, deployment, capture, **data):
    with capture(execute=False):
        response = api.post(f"/api/v1/deployments/{deployment.slug}/batch/", data,
                            format="json" if "dataset_version" in data else "multipart")
    return response


def run_job(job_id, capture, *, order=None):
    """The job as the workers run it, in this process: prepare, then the chunks (in `order` if given)."""
    with capture(execute=False) as callbacks:
        batch.prepare(str(job_id))
    run = BatchRun.objects.get(job_id=job_id)
    assert len(callbacks) == (1 if run.chunk_count else 0)  # the group is sent after the split commits
    for index in order if order is not None else range(run.chunk_count):
        with capture(execute=True):
            batch.score_chunk(str(job_id), index)
    run.refresh_from_db()
    run.job.refresh_from_db()
    return run


def download(api, run) -> pd.DataFrame:
    response = api.get(f"/api/v1/deployments/{run.deployment.slug}/batch/{run.uuid}/result/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv"
    return pd.read_csv(io.BytesIO(b"".join(response.streaming_content)))


def model_predictions(version, frame: pd.DataFrame) -> list:
    return list(load_predictor(version).predict(frame[FEATURES]))


def test_an_uploaded_file_is_scored_in_chunks_in_row_order(people, api_as, deployment, version,
                                                           django_capture_on_commit_callbacks):
    api = api_as(people["viewer"])  # whoever may call the endpoint may score a file
    frame = training_frame(rows=200, seed=11)[FEATURES]
    response = start(api, deployment, django_capture_on_commit_callbacks, file=csv_file(frame))
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["job"]["status"] == "queued" and body["job"]["url"].endswith(f"/api/v1/jobs/{body['job']['id']}/")
    assert body["batch"]["source"] == {"kind": "file", "name": "customers.csv"}
    assert body["batch"]["model_version"]["number"] == version.number and body["batch"]["result_url"] is None

    run = run_job(body["job"]["id"], django_capture_on_commit_callbacks, order=[2, 0, 1])  # any order

    assert run.job.status == Job.Status.SUCCEEDED, run.job.error
    assert (run.row_count, run.chunk_count, run.chunks_done, run.job.progress) == (200, 3, 3, 100)
    result = download(api, run)
    assert list(result.columns) == [*FEATURES, "prediction", "request_id", "row"]
    assert result["row"].tolist() == list(range(200))
    pd.testing.assert_frame_equal(result[FEATURES], frame, check_dtype=False)
    assert result["prediction"].tolist() == model_predictions(version, frame)
    assert set(result["request_id"]) == {run.request_id}
    detail = api.get(f"/api/v1/deployments/{deployment.slug}/batch/{run.uuid}/").json()
    assert detail["status"] == "succeeded" and detail["result_url"].endswith(f"/batch/{run.uuid}/result/")
    listed = api.get(f"/api/v1/deployments/{deployment.slug}/batch/").json()
    assert [r["id"] for r in listed["results"]] == [str(run.uuid)]


def test_a_parquet_file_is_scored_too(people, api_as, deployment, version, django_capture_on_commit_callbacks):
    frame = training_frame(rows=50, seed=2)[FEATURES]
    data = io.BytesIO()
    frame.to_parquet(data)
    api = api_as(people["scientist"])
    response = start(api, deployment, django_capture_on_commit_callbacks,
                     file=SimpleUploadedFile("rows.parquet", data.getvalue()))
    run = run_job(response.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == Job.Status.SUCCEEDED, run.job.error
    assert download(api, run)["prediction"].tolist() == model_predictions(version, frame)


def test_a_dataset_version_of_the_project_is_scored(people, api_as, deployment, version, training,
                                                     django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    # The training data has the label too: refused by default, like an unknown column in a request...
    refused = start(api, deployment, django_capture_on_commit_callbacks, dataset_version=str(training.uuid))
    assert refused.status_code == 202, refused.content
    run = run_job(refused.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == Job.Status.FAILED
    assert "“churned”" in run.job.error and "keep_extra_columns" in run.job.error
    assert run.chunk_count == 0  # nothing was scored
    # ...or carried into the result unscored when asked.
    response = start(api, deployment, django_capture_on_commit_callbacks, dataset_version=str(training.uuid),
                     keep_extra_columns=True)
    run = run_job(response.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == Job.Status.SUCCEEDED, run.job.error
    assert response.json()["batch"]["source"]["dataset_version"] == str(training.uuid)
    result = download(api, run)
    frame = training_frame()
    assert list(result.columns) == [*FEATURES, "churned", "prediction", "request_id", "row"]
    assert result["churned"].tolist() == frame["churned"].tolist()
    assert result["prediction"].tolist() == model_predictions(version, frame)


def test_progress_rises_chunk_by_chunk_and_a_redelivered_chunk_counts_once(people, api_as, deployment,
                                                                            django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    response = start(api, deployment, django_capture_on_commit_callbacks, file=csv_file(training_frame()[FEATURES]))
    job_id = response.json()["job"]["id"]
    with django_capture_on_commit_callbacks(execute=False):
        batch.prepare(job_id)
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.progress) == ("running", batch.PREPARE_SHARE)
    assert "200 rows in 3 chunk(s)" in job.message
    seen = [job.progress]
    for index in (0, 0, 1):  # chunk 0 delivered twice (acks_late)
        with django_capture_on_commit_callbacks(execute=True):
            batch.score_chunk(job_id, index)
        seen.append(Job.objects.get(pk=job_id).progress)
    run = BatchRun.objects.get(job_id=job_id)
    assert run.chunks_done == 2 and seen == sorted(seen) and seen[-1] < 100
    assert "2 of 3 chunk(s)" in Job.objects.get(pk=job_id).message
    pending = api.get(f"/api/v1/deployments/{deployment.slug}/batch/{run.uuid}/result/")
    assert pending.status_code == 404 and "not ready yet" in pending.json()["detail"]
    # The split delivered again re-sends only the chunk not done; it finishes the job.
    with django_capture_on_commit_callbacks(execute=False):
        batch.prepare(job_id)
    with django_capture_on_commit_callbacks(execute=True):
        batch.score_chunk(job_id, 2)
    run.refresh_from_db()
    assert run.chunks_done == 3 and run.job.status == "succeeded" and len(download(api, run)) == 200


def test_each_chunk_is_in_the_prediction_log_with_the_runs_request_id(settings, people, api_as, deployment,
                                                                       django_capture_on_commit_callbacks):
    settings.PORTAL_BATCH_LOG_ROWS = 65  # the 60-row chunk is logged in full, the 70-row ones by reference
    api = api_as(people["viewer"])
    response = start(api, deployment, django_capture_on_commit_callbacks, file=csv_file(training_frame()[FEATURES]))
    run = run_job(response.json()["job"]["id"], django_capture_on_commit_callbacks)
    batch.score_chunk(str(run.job_id), 1)  # a late duplicate: logged once
    predlog.drain()
    logs = {log.row_count: log for log in PredictionLog.objects.filter(request_id=run.request_id)}
    assert sorted(logs) == [60, 70] and PredictionLog.objects.filter(request_id=run.request_id).count() == 3
    full, referenced = logs[60], PredictionLog.objects.filter(request_id=run.request_id, row_count=70)
    assert (full.source, full.status_code, full.caller, full.model_version_id) == (
        "batch", 200, "viewer", run.model_version_id)
    assert full.inputs["columns"] == FEATURES and len(full.inputs["data"]) == 60 and len(full.outputs) == 60
    assert sorted(r.inputs["rows"] for r in referenced) == [[0, 70], [70, 140]]
    assert all(r.inputs["batch"] == str(run.uuid) and r.outputs is None for r in referenced)


@pytest.mark.parametrize(("change", "column", "words"), [
    (lambda f: f.assign(age=f["age"].astype(object).where(f.index != 150, "abc")), "age",
     ["Column “age”, row 150", "line 152"]),
    (lambda f: f.drop(columns=["tenure"]), "tenure", ["Column “tenure” is missing"]),
    (lambda f: f.assign(nickname="x"), "nickname", ["no input called “nickname”"]),
])
def test_a_bad_file_fails_before_any_scoring_naming_the_column(people, api_as, deployment, change, column, words,
                                                                django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    response = start(api, deployment, django_capture_on_commit_callbacks,
                     file=csv_file(change(training_frame()[FEATURES])))
    run = run_job(response.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == Job.Status.FAILED
    assert all(w in run.job.error for w in words), run.job.error
    assert run.chunk_count == 0 and not run.result_file
    body = api.get(f"/api/v1/deployments/{deployment.slug}/batch/{run.uuid}/").json()
    assert body["status"] == "failed" and column in body["error"]
    missing = api.get(f"/api/v1/deployments/{deployment.slug}/batch/{run.uuid}/result/")
    assert missing.status_code == 404 and "failed" in missing.json()["detail"]
    predlog.drain()
    assert PredictionLog.objects.get(request_id=run.request_id).status_code == 400


def test_a_model_that_raises_fails_the_job_naming_the_chunk(people, api_as, project, sandbox, tmp_path,
                                                            django_capture_on_commit_callbacks):
    from tests.deployments.conftest import RaisingModel, custom_version

    broken = custom_version(project, people["scientist"], RaisingModel, tmp_path, name="Broken")
    deployment = services.deploy(project, actor=people["scientist"], name="Broken scoring", environment=sandbox,
                                 version=broken)
    api = api_as(people["scientist"])
    response = start(api, deployment, django_capture_on_commit_callbacks, file=csv_file(training_frame()[FEATURES]))
    run = run_job(response.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == Job.Status.FAILED
    assert "Chunk 1 of 3 (rows 0–69) failed" in run.job.error and "the model's own bug" in run.job.error
    assert run.chunks_done == 0 and not run.result_file  # the later chunks saw the failed job and stopped
    predlog.drain()
    assert PredictionLog.objects.get(request_id=run.request_id).status_code == 502


def test_bad_requests_answer_clear_4xx(people, api_as, deployment, other_project, project,
                                       django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    url = f"/api/v1/deployments/{deployment.slug}/batch/"
    nothing = api.post(url, {}, format="multipart")
    assert nothing.status_code == 400 and "file" in nothing.json()["errors"]
    pdf = api.post(url, {"file": SimpleUploadedFile("x.pdf", b"%PDF-1.4")}, format="multipart")
    assert pdf.status_code == 400 and ".pdf" in pdf.json()["errors"]["file"][0]
    unknown = api.post(url, {"dataset_version": "00000000-0000-0000-0000-000000000000"}, format="json")
    assert unknown.status_code == 400 and "dataset_version" in unknown.json()["errors"]
    services.set_status(deployment, actor=people["scientist"], active=False, reason="maintenance")
    stopped = start(api, deployment, django_capture_on_commit_callbacks, file=csv_file(training_frame()[FEATURES]))
    assert stopped.status_code == 409 and "stopped" in stopped.json()["detail"]
    assert not BatchRun.objects.exists()


def test_outsiders_and_tokens_of_other_projects_get_404(people, api_as, client_as, deployment, other_project,
                                                        django_capture_on_commit_callbacks):
    response = start(api_as(people["scientist"]), deployment, django_capture_on_commit_callbacks,
                     file=csv_file(training_frame()[FEATURES]))
    run = run_job(response.json()["job"]["id"], django_capture_on_commit_callbacks)
    base = f"/api/v1/deployments/{deployment.slug}/batch/"
    Membership.objects.create(user=people["admin"], project=other_project, role="admin")
    admin = type(people["admin"]).objects.get(pk=people["admin"].pk)  # without the cached roles
    for api in (api_as(people["outsider"]), api_as(admin, project=other_project)):
        assert api.get(base).status_code == 404
        assert api.get(f"{base}{run.uuid}/").status_code == 404
        assert api.get(f"{base}{run.uuid}/result/").status_code == 404
        assert api.post(base, {"file": csv_file(training_frame()[FEATURES])}, format="multipart").status_code == 404
    outsider = client_as(people["outsider"])
    pages = f"/deployments/{deployment.slug}/batch/"
    for url in (pages, f"{pages}panel/", f"{pages}{run.uuid}/", f"{pages}{run.uuid}/result/"):
        assert outsider.get(url).status_code == 404
    assert BatchRun.objects.count() == 1


def test_the_panel_starts_a_run_shows_its_progress_and_offers_the_download(people, client_as, deployment, version,
                                                                           django_capture_on_commit_callbacks):
    client = client_as(people["viewer"])
    empty = client.get(f"/deployments/{deployment.slug}/batch/panel/")
    assert empty.status_code == 200 and b"No batch runs yet" in empty.content
    frame = training_frame()[FEATURES]
    with django_capture_on_commit_callbacks(execute=False):
        started = client.post(f"/deployments/{deployment.slug}/batch/", {"file": csv_file(frame)},
                              headers={"HX-Request": "true", "HX-Target": "batch-panel"})
    assert started.status_code == 200 and b"Scoring customers.csv" in started.content
    run = BatchRun.objects.get()
    assert f'id="batch-run-{run.uuid}"'.encode() in started.content and b'hx-trigger="every 1s"' in started.content
    run = run_job(run.job_id, django_capture_on_commit_callbacks)
    row = client.get(f"/deployments/{deployment.slug}/batch/{run.uuid}/", headers={"HX-Request": "true"})
    assert b"Download CSV" in row.content and b"every 1s" not in row.content  # done: the polling stops
    downloaded = client.get(f"/deployments/{deployment.slug}/batch/{run.uuid}/result/")
    result = pd.read_csv(io.BytesIO(b"".join(downloaded.streaming_content)))
    assert result["prediction"].tolist() == model_predictions(version, frame)
    page = client.get(f"/deployments/{deployment.slug}/batch/")
    assert page.status_code == 200 and b"All runs" in page.content and b"Download CSV" in page.content
    # A form error comes back in the panel, next to the field.
    with django_capture_on_commit_callbacks(execute=False):
        bad = client.post(f"/deployments/{deployment.slug}/batch/", {},
                          headers={"HX-Request": "true", "HX-Target": "batch-panel"})
    assert b"one of the two" in bad.content and BatchRun.objects.count() == 1


def test_the_deployment_page_embeds_the_panel(people, client_as, deployment):
    page = client_as(people["viewer"]).get(f"/deployments/{deployment.slug}/")
    assert page.status_code == 200
    assert f'hx-get="/deployments/{deployment.slug}/batch/panel/"'.encode() in page.content


# --- With the real worker: the group of chunk tasks goes through the broker ----------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_group_of_chunk_tasks(celery_worker_process, jobs_stay_in_process, people, api_as,
                                                     deployment, version):
    frame = training_frame(rows=200, seed=7)[FEATURES]
    api = api_as(people["scientist"])
    response = api.post(f"/api/v1/deployments/{deployment.slug}/batch/", {"file": csv_file(frame)},
                        format="multipart")
    assert response.status_code == 202, response.content
    job_id = response.json()["job"]["id"]
    deadline = time.monotonic() + 180
    seen = []
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if not seen or seen[-1] != job.progress:
            seen.append(job.progress)
        if job.is_finished:
            break
        time.sleep(0.05)
    assert job.status == Job.Status.SUCCEEDED, (job.error, celery_worker_process.read_text()[-3000:])
    run = BatchRun.objects.get(job_id=job_id)
    assert (run.chunk_count, run.chunks_done) == (3, 3)  # the chunk size this process set, recorded on the job
    received = re.findall(r"score_batch_chunk_task\[([0-9a-f-]+)\] received", celery_worker_process.read_text())
    assert len(set(received)) >= 3  # one task per chunk, each through the broker
    assert seen == sorted(seen), seen
    result = download(api, run)
    assert result["prediction"].tolist() == model_predictions(version, frame)
    assert result["row"].tolist() == list(range(200))
