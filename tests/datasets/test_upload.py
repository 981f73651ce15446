"""Uploading data: through the API and the page, versions, duplicates, bad files, and the profile that results."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.core import storage
from apps.datasets.models import Dataset, DatasetVersion
from tests.datasets.conftest import job_of, run_profiling, upload

pytestmark = pytest.mark.django_db


def _api_upload(api, content: bytes, *, name="customers", filename="people.csv", project="alpha"):
    return api.post("/api/v1/datasets/", {"project": project, "name": name, "description": "first cut",
                                          "file": upload(filename, content)}, format="multipart")


def test_api_upload_creates_version_1_and_a_profiling_job(people, media, people_csv, api_as,
                                                          django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = _api_upload(api, people_csv)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["version"] == 1 and body["job"]["status"] == "queued" and len(enqueued) == 1
    version = DatasetVersion.objects.get(dataset__uuid=body["dataset"], number=1)
    assert version.sha256 == __import__("hashlib").sha256(people_csv).hexdigest()
    assert version.size_bytes == len(people_csv) and version.format == "csv"
    with storage.open_stream(version.file_name) as stored:
        assert stored.read() == people_csv, "the stored file is exactly what was uploaded"

    run_profiling(version)
    detail = api.get(body["url"]).json()
    assert detail["status"] == "ready" and detail["row_count"] == 200 and detail["column_count"] == 7
    assert {c["name"]: c["type"] for c in detail["schema"]}["age"] == "integer"
    assert {p["column"] for p in detail["pii"]} >= {"email", "name"}
    assert job_of(version).progress == 100
    assert AuditEvent.objects.filter(action="dataset.upload", actor=people["scientist"]).exists()


def test_identical_reupload_says_so_and_creates_no_version(people, media, people_csv, api_as,
                                                          django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        first = _api_upload(api, people_csv)
        again = _api_upload(api, people_csv)
        changed = _api_upload(api, people_csv + b"999,Zoe Last,zoe@example.org,40,1,gold,2024-01-01\n")
    assert again.status_code == 200 and again.json()["duplicate"] is True and "identical" in again.json()["detail"]
    assert again.json()["version"] == first.json()["version"] == 1
    assert changed.status_code == 202 and changed.json()["version"] == 2
    assert DatasetVersion.objects.filter(dataset__name="customers").count() == 2


def test_viewer_cannot_upload_and_outsider_cannot_see_the_project(people, media, people_csv, api_as):
    assert _api_upload(api_as(people["viewer"]), people_csv).status_code == 403
    refused = _api_upload(api_as(people["outsider"]), people_csv)
    assert refused.status_code == 400 and "project" in refused.json()["errors"]
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(("filename", "content", "message"), [
    ("empty.csv", b"", "empty"),
    ("photo.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, ""),
])
def test_bad_files_are_refused_with_a_message_naming_the_file_field(people, media, api_as, filename, content,
                                                                     message):
    response = _api_upload(api_as(people["scientist"]), content, filename=filename)
    assert response.status_code == 400, response.content
    assert "file" in response.json()["errors"]
    assert message in response.json()["detail"].lower()
    assert not DatasetVersion.objects.exists()


def test_a_file_that_fails_profiling_marks_the_version_failed_and_keeps_earlier_versions(
        people, profiled, media, django_capture_on_commit_callbacks):
    from apps.datasets import services

    ragged = b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n"
    with django_capture_on_commit_callbacks(execute=False):
        version, _ = services.upload_version(profiled.dataset, actor=people["scientist"],
                                             uploaded=upload("ragged.csv", ragged))
    run_profiling(version)
    assert version.status == "failed" and version.error
    assert job_of(version).status == "failed"
    profiled.refresh_from_db()
    assert profiled.status == "ready" and profiled.row_count == 200, "earlier versions are untouched"


def test_upload_page_creates_the_dataset_and_redirects_to_its_version(people, media, people_csv, client_as,
                                                                      django_capture_on_commit_callbacks):
    client = client_as(people["scientist"])
    assert "Upload data" in client.get("/projects/alpha/datasets/").content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/projects/alpha/datasets/", {"name": "customers", "file": upload("p.csv", people_csv)})
    version = DatasetVersion.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/datasets/{version.dataset.uuid}/v1/"
    page = client.get(response["Location"]).content.decode()
    assert "Profiling" in page


def test_upload_page_shows_form_errors_in_place(people, media, client_as):
    client = client_as(people["scientist"])
    response = client.post("/projects/alpha/datasets/", {"name": "", "file": upload("e.csv", b"")},
                           HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "invalid-feedback" in response.content.decode()
    assert not Dataset.objects.exists()


def test_explore_page_shows_overview_warnings_columns_and_charts(people, profiled, client_as):
    page = client_as(people["scientist"]).get(f"/datasets/{profiled.dataset.uuid}/v1/").content.decode()
    assert 'data-stat="rows">200<' in page
    assert 'data-column="email"' in page and "plotly-chart" in page
    assert "Things to check" in page


def test_grid_pages_sorts_and_filters_through_the_page_and_the_api(people, profiled, client_as, api_as):
    base = f"/datasets/{profiled.dataset.uuid}/v1/rows/"
    html = client_as(people["scientist"]).get(base, {"sort_by": "age"}).content.decode()
    assert 'aria-sort="ascending"' in html
    api = api_as(people["scientist"])
    rows = api.get(f"/api/v1/datasets/{profiled.dataset.uuid}/versions/1/rows/",
                   {"sort": "income", "desc": "1", "page_size": 5, "filter[segment]": "=gold"}).json()
    assert rows["count"] == len([i for i in range(200) if i % 3 == 0])
    assert len(rows["results"]) == 5 and all(r["segment"] == "gold" for r in rows["results"])
    incomes = [r["income"] for r in rows["results"]]
    assert incomes == sorted(incomes, reverse=True)
    bad = api.get(f"/api/v1/datasets/{profiled.dataset.uuid}/versions/1/rows/", {"sort": "nope"})
    assert bad.status_code == 400 and "query" in bad.json()["errors"]


def test_a_type_change_late_in_the_file_is_profiled_and_copied_with_the_final_type(
        people, profiled, media, monkeypatch, django_capture_on_commit_callbacks):
    """The job reads in one pass, then starts over when row 400 turns a whole-number column into decimals."""
    import pyarrow.parquet as pq

    from apps.datasets import readers, services

    monkeypatch.setattr(readers.csv_plan, "CHUNK_BYTES", 256)
    monkeypatch.setattr(readers.csv_plan, "HEAD_BYTES", 64)
    content = b"id,amount\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(400)) + b"400,0.5\n"
    with django_capture_on_commit_callbacks(execute=False):
        version, _ = services.upload_version(profiled.dataset, actor=people["scientist"],
                                             uploaded=upload("late.csv", content))
    run_profiling(version)
    assert version.status == "ready" and version.row_count == 401
    assert {c["name"]: c["type"] for c in version.schema}["amount"] == "float"
    with storage.open_stream(version.parquet_name) as copy:
        table = pq.read_table(copy)
    assert table.num_rows == 401, "the first attempt's rows were not kept twice"
    assert table.column("amount").to_pylist()[-2:] == [399.0, 0.5]
