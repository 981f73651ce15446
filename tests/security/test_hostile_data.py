"""Hostile data through the real entry points: dataset upload (API), the profiling job, the grid, anonymisation,
batch scoring, the prediction log and every CSV export.

- Spreadsheet formulas in cells come back out of every CSV the portal writes (prediction-log export, batch result,
  audit export) with a leading apostrophe; numbers stay numbers (one rule: apps/core/exports.py).
- Odd and hostile files (UTF-16, latin-1, ragged rows, 100k columns, a huge cell, empty, header only, binary junk,
  .xlsx zip bombs, entity bombs, external links, Parquet extension/nested/dictionary types, billions of declared
  rows) give a clear error or are read correctly: never an internal error, always within a time bound.
- Hostile file names are shown and audited cleaned and escaped, and stored inside the storage folder.
- Seeded SSNs and e-mail addresses never reach the application logs, the audit trail, job messages, the
  prediction log or a viewer's export.

Jobs run in this process exactly as the Celery tasks run them (as tests/datasets and tests/deployments do).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEvent
from apps.core.exports import spreadsheet_safe, spreadsheet_safe_table
from apps.core.models import Job
from apps.datasets import services as datasets
from apps.datasets.models import DatasetVersion
from apps.deployments import batch, predlog
from apps.deployments import services as deployments
from apps.deployments.models import BatchRun, PredictionLog
from tests.deployments.conftest import _fresh_serving, import_skops, sandbox  # noqa: F401  (fixtures)
from tests.registry.conftest import _mlflow_store, mlflow_store  # noqa: F401  (an MLflow store for real models)
from tests.security import hostile_data_files as files
from tests.security.hostile_data_files import FORMULAS, HARMLESS, bounded

pytestmark = pytest.mark.django_db

INTERNAL = "internal error"


def upload(api, name: str, content: bytes, filename: str):
    return api.post("/api/v1/datasets/", {"project": "alpha", "name": name,
                                          "file": SimpleUploadedFile(filename, content)}, format="multipart")


def profile(response) -> DatasetVersion:
    """Run the profiling job the upload started, bounded in time, as the worker would."""
    assert response.status_code == 202, response.content
    version = DatasetVersion.objects.get(dataset__uuid=response.json()["dataset"], number=response.json()["version"])
    with bounded(60):
        datasets.profile_version(str(version.profile_job_id))
    version.refresh_from_db()
    return version


def rows_of(api, version: DatasetVersion) -> list[dict]:
    response = api.get(f"/api/v1/datasets/{version.dataset.uuid}/versions/{version.number}/rows/",
                       {"page_size": 500})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def read_csv(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))


# --- Spreadsheet formulas out of every export ---------------------------------------------------------------


@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_gets_an_apostrophe_in_python_and_in_arrow(text):
    assert spreadsheet_safe(text) == "'" + text
    assert spreadsheet_safe_table(pa.table({"c": [text]})).column(0).to_pylist() == ["'" + text]


@pytest.mark.parametrize("text", HARMLESS)
def test_numbers_and_plain_text_are_left_alone(text):
    assert spreadsheet_safe(text) == text
    assert spreadsheet_safe_table(pa.table({"c": [text]})).column(0).to_pylist() == [text]


def test_numbers_stay_numbers():
    assert [spreadsheet_safe(v) for v in (-1, -2.5, 0, None)] == [-1, -2.5, 0, ""]
    table = spreadsheet_safe_table(pa.table({"n": [-1, 2], "=name": ["=a", "b"]}))
    assert table.column("n").type == pa.int64() and table.column("n").to_pylist() == [-1, 2]
    assert table.column_names == ["n", "'=name"]


def test_the_audit_export_uses_the_one_shared_rule():
    from apps.audit import services as audit

    assert audit.spreadsheet_safe is spreadsheet_safe


@pytest.fixture
def echo(people, project, sandbox, tmp_path):  # noqa: F811
    version = files.echo_version(project, people["scientist"], tmp_path)
    return deployments.deploy(project, actor=people["scientist"], name="Echo", environment=sandbox, version=version)


def test_prediction_log_csv_export_neutralises_formulas_and_keeps_numbers(people, api_as, echo):
    notes = FORMULAS + HARMLESS
    body = {"dataframe_records": [{"age": -1 - i, "note": note} for i, note in enumerate(notes)]}
    response = api_as(people["scientist"]).post(f"/api/v1/deployments/{echo.slug}/invocations", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["predictions"] == notes  # the model's answer is the note itself
    predlog.drain()

    export = api_as(people["admin"]).get(f"/api/v1/deployments/{echo.slug}/predictions/export/", {"format": "csv"})
    assert export.status_code == 200
    header, *lines = read_csv(b"".join(export.streaming_content))
    got = [dict(zip(header, line, strict=True)) for line in lines]
    assert [line["note"] for line in got] == [spreadsheet_safe(n) for n in notes]
    assert [line["prediction"] for line in got] == [spreadsheet_safe(n) for n in notes]
    assert [line["note"] for line in got][:len(FORMULAS)] == ["'" + n for n in FORMULAS]
    assert [line["age"] for line in got] == [str(-1 - i) for i in range(len(notes))]  # negative numbers stay numbers


def test_batch_result_csv_neutralises_formulas_in_inputs_answers_and_header(people, api_as, echo,
                                                                            django_capture_on_commit_callbacks):
    notes = FORMULAS + [h for h in HARMLESS if h]  # an empty cell in a file is a missing value
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["age", "note", "@comment"])
    writer.writerows([[-5 - i, note, note] for i, note in enumerate(notes)])
    viewer = api_as(people["viewer"])
    with django_capture_on_commit_callbacks(execute=False):
        started = viewer.post(f"/api/v1/deployments/{echo.slug}/batch/",
                              {"file": SimpleUploadedFile("notes.csv", buffer.getvalue().encode()),
                               "keep_extra_columns": "true"}, format="multipart")
    assert started.status_code == 202, started.content
    run = run_batch(started.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == "succeeded", run.job.error

    result = viewer.get(f"/api/v1/deployments/{echo.slug}/batch/{run.uuid}/result/")
    header, *lines = read_csv(b"".join(result.streaming_content))
    assert header[:3] == ["age", "note", "'@comment"]
    got = [dict(zip(header, line, strict=True)) for line in lines]
    expected = [spreadsheet_safe(n) for n in notes]
    assert [g["note"] for g in got] == expected and [g["prediction"] for g in got] == expected
    assert [g["'@comment"] for g in got] == expected
    assert [g["age"] for g in got] == [str(-5 - i) for i in range(len(notes))]


def run_batch(job_id, capture) -> BatchRun:
    with bounded(60):
        with capture(execute=False):
            batch.prepare(str(job_id))
        run = BatchRun.objects.get(job_id=job_id)
        for index in range(run.chunk_count):
            with capture(execute=True):
                batch.score_chunk(str(job_id), index)
    run.refresh_from_db()
    run.job.refresh_from_db()
    return run


def test_audit_csv_neutralises_a_dataset_named_like_a_formula(people, api_as, client_as):
    name = FORMULAS[0]
    assert upload(api_as(people["scientist"]), name, b"a,b\n1,2\n", "data.csv").status_code == 202
    response = client_as(people["staff"]).get("/audit/export.csv", {"action": "dataset.create"})
    header, row = read_csv(b"".join(response.streaming_content))
    cells = dict(zip(header, row, strict=True))
    assert cells["object"] == "'" + name
    assert json.loads(cells["details"]) == {"name": name}


# --- Odd and hostile files: a clear error or a correct read, never an internal error ------------------------


READ = {
    "utf16.csv": (files.utf16_csv, [{"name": "José", "city": "Zürich", "n": 1}, {"name": "René", "city": "Köln",
                                                                                  "n": 2}]),
    "latin1.csv": (files.latin1_csv, [{"name": "José", "city": "Zürich", "n": 1}, {"name": "René", "city": "Köln",
                                                                                   "n": 2}]),
    "header-only.csv": (lambda: b"a,b,c\n", []),
    "header-no-newline.csv": (lambda: b"a,b,c", []),
    "one-column-3mb-cell.csv": (lambda: files.huge_cell_csv(3 << 20), 2),
    "external-link.xlsx": (files.external_link_xlsx, [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    "understated-size.xlsx": (files.understated_dimension_xlsx, 3002),
    "far-away-cells.xlsx": (files.far_away_cells_xlsx, 3003),
    "extension-type.parquet": (files.extension_parquet, [{"id": u.hex, "n": i + 1} for i, u in
                                                         enumerate(files.UUIDS)]),
    "arrow-uuid.parquet": (files.arrow_uuid_parquet, [{"id": str(u)} for u in files.UUIDS]),
    "unknown-extension.parquet": (files.unknown_extension_metadata_parquet, [{"x": "a"}, {"x": "b"}]),
    "nested.parquet": (files.nested_parquet, [{"s": '{"a": 1, "b": "x"}', "l": "[1, 2]", "m": '[["k", 1]]'},
                                              {"s": None, "l": "[]", "m": None},
                                              {"s": '{"a": 2, "b": "y"}', "l": None, "m": "[]"}]),
    "dictionary.parquet": (files.dictionary_parquet, [{"d": "a", "i": 10}, {"d": "b", "i": 20},
                                                      {"d": "a", "i": 10}]),
}


@pytest.mark.parametrize("filename", READ)
def test_odd_files_are_read_correctly(people, api_as, filename):
    build, expected = READ[filename]
    api = api_as(people["scientist"])
    version = profile(upload(api, filename, build(), filename))
    assert version.status == "ready", version.error
    rows = rows_of(api, version)
    if isinstance(expected, int):
        assert version.row_count == expected
    else:
        assert rows == expected


@pytest.fixture
def uuid_like_registered():
    """The extension type registered in this process, as a library the worker imports might do."""
    pa.register_extension_type(files.UuidLike())
    yield
    pa.unregister_extension_type("hostile.uuid")


def test_a_registered_extension_type_is_read_as_its_values(people, api_as, uuid_like_registered):
    api = api_as(people["scientist"])
    version = profile(upload(api, "registered", files.extension_parquet(), "registered.parquet"))
    assert version.status == "ready", version.error
    assert rows_of(api, version) == [{"id": u.hex, "n": i + 1} for i, u in enumerate(files.UUIDS)]


def test_the_external_link_is_never_followed(people, api_as):
    api = api_as(people["scientist"])
    version = profile(upload(api, "linked", files.external_link_xlsx(), "linked.xlsx"))
    assert "root:" not in json.dumps(version.profile) and "root:" not in json.dumps(rows_of(api, version))


def test_cells_far_to_the_right_are_reported_not_read(people, api_as):
    version = profile(upload(api_as(people["scientist"]), "far", files.far_away_cells_xlsx(), "far.xlsx"))
    assert version.column_count == 2
    assert any(w["kind"] == "ignored_cells" for w in version.profile["warnings"])


REFUSED_BY_PROFILING = {
    "ragged.csv": (lambda: b"a,b,c\n1,2,3\n4,5\n", "Line 3 has 2 values but the header has 3 columns"),
    "100k-columns.csv": (files.wide_header_csv, "100,000 columns; the portal reads at most 2,000"),
    "20mb-row.csv": (lambda: files.huge_cell_csv(20 << 20), "a row longer than 8 MB"),
    "zip-bomb.xlsx": (files.zip_bomb_xlsx, "zip bomb"),
    "billion-laughs.xlsx": (files.billion_laughs_xlsx, "not valid spreadsheet XML"),
    "external-entity.xlsx": (files.external_entity_xlsx, "not valid spreadsheet XML"),
    "bad-reference.xlsx": (files.bad_cell_reference_xlsx, "not valid spreadsheet XML"),
    "extension-mismatch.parquet": (lambda: files.unknown_extension_metadata_parquet(b"arrow.json", pa.int64()),
                                   "This Parquet file can't be read"),
}


@pytest.mark.parametrize("filename", REFUSED_BY_PROFILING)
def test_hostile_files_fail_profiling_with_a_clear_message(people, api_as, client_as, filename):
    build, message = REFUSED_BY_PROFILING[filename]
    version = profile(upload(api_as(people["scientist"]), filename, build(), filename))
    job = Job.objects.get(pk=version.profile_job_id)
    assert version.status == "failed" and job.status == "failed"
    assert message in version.error and job.error == version.error and INTERNAL not in version.error
    page = client_as(people["viewer"]).get(f"/datasets/{version.dataset.uuid}/v{version.number}/")
    assert page.status_code == 200


def test_parquet_declaring_more_rows_than_the_largest_csv_could_hold_is_refused(people, api_as, settings):
    settings.PORTAL_MAX_UPLOAD_BYTES = 1 << 20  # so at most 524,288 rows; the file itself is a few KB
    data = files.many_rows_parquet(600_000)
    assert len(data) < 64 * 1024
    version = profile(upload(api_as(people["scientist"]), "many", data, "many.parquet"))
    assert version.status == "failed"
    assert "declares 600,000 rows; the portal reads at most 524,288" in version.error


REFUSED_AT_UPLOAD = {
    "empty.csv": (b"", "empty"),
    "junk.csv": (bytes(range(256)) * 64, "contains binary data, not text"),
    "zip.csv": (files.base_xlsx(), "contains a zip archive"),
    "text.xlsx": (b"a,b\n1,2\n", "is not an Excel workbook"),
    "text.parquet": (b"a,b\n1,2\n", "is not a Parquet file"),
}


@pytest.mark.parametrize("filename", REFUSED_AT_UPLOAD)
def test_files_that_are_not_what_they_claim_are_refused_at_upload(people, api_as, filename):
    content, message = REFUSED_AT_UPLOAD[filename]
    response = upload(api_as(people["scientist"]), "refused", content, filename)
    assert response.status_code == 400
    assert message in response.json()["errors"]["file"][0]
    assert not DatasetVersion.objects.exists()


# --- Hostile file names ---------------------------------------------------------------------------------------

NAMES = {
    "traversal": "../../../../etc/cron.d/evil.csv",
    "windows-traversal": "..\\..\\windows\\system32\\evil.csv",
    "nul": "evil\x00name.csv",
    "rtl-override": "invoice\u202evsc.exe.csv",
    "300-characters": "x" * 300 + ".csv",
    "windows-reserved": "CON.csv",
    "windows-device": "COM1.csv",
    "html": '<img src=x onerror="alert(1)">.csv',
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_hostile_file_names_are_stored_safely_and_shown_escaped(people, api_as, client_as, settings, name):
    body, content_type = files.multipart({"project": "alpha", "name": "named"}, filename=name,
                                         content=b"a,b\n1,2\n")
    response = api_as(people["scientist"]).post("/api/v1/datasets/", body, content_type=content_type)
    assert response.status_code == 202, response.content
    version = DatasetVersion.objects.get(dataset__uuid=response.json()["dataset"])
    shown = version.original_filename
    assert shown.endswith(".csv") and len(shown) <= 255
    assert not set(shown) & {"/", "\\", "\x00", "\u202e"}
    media = Path(settings.MEDIA_ROOT).resolve()
    stored = (media / version.file_name).resolve()
    assert stored.is_file() and stored.is_relative_to(media / "datasets" / str(version.dataset.uuid))
    event = AuditEvent.objects.get(action="dataset.upload")
    assert event.details["file"] == shown
    page = client_as(people["viewer"]).get(f"/datasets/{version.dataset.uuid}/").content.decode()
    assert "<img src=x" not in page
    if "<img" in name:
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.csv" in page


def test_the_service_cleans_names_that_did_not_come_through_a_browser(people, project):
    # Django's multipart parser already drops control characters; a service called by other code must not rely on it.
    dataset = datasets.create_dataset(project, actor=people["scientist"], name="direct")
    version, _ = datasets.upload_version(dataset, actor=people["scientist"],
                                         uploaded=SimpleUploadedFile("in\x00voice\u202evsc.csv", b"a\n1\n"))
    assert version.original_filename == "invoicevsc.csv"


# --- Personal data never leaks into logs, the audit trail, jobs or a viewer's exports ----------------------


SSNS = ["123-45-6789"] + [f"{200 + i:03d}-{10 + i:02d}-{1000 + i:04d}" for i in range(39)]
EMAILS = [f"seed.person{i}@example.org" for i in range(40)]
SECRET = re.compile("|".join(re.escape(v) for v in SSNS + EMAILS) + r"|seed\.person")


def seeded_csv() -> bytes:
    lines = ["id,ssn,email,age,income,tenure"]
    lines += [f"{i},{SSNS[i]},{EMAILS[i]},{20 + i},{30000 + 250 * i}.5,{i % 12}" for i in range(40)]
    return ("\n".join(lines) + "\n").encode()


def assert_no_secret(where: str, text: str) -> None:
    found = SECRET.search(text)
    assert found is None, f"{where} contains {found.group(0)!r}"


def assert_nothing_leaked(caplog) -> None:
    assert_no_secret("the application log", caplog.text)
    for event in AuditEvent.objects.all():
        assert_no_secret(f"audit event {event.action}", json.dumps(event.details) + event.object_repr)
    for job in Job.objects.all():
        assert_no_secret(f"job {job.kind}", json.dumps([job.message, job.error, job.result, job.params]))
    # Batch scoring logs what the model was given: its own columns, never the dataset's others. (An online request
    # is logged as its caller sent it; the export and the pages apply the roles to it.)
    for record in PredictionLog.objects.filter(source="batch"):
        assert_no_secret("the batch's prediction log", json.dumps([record.inputs, record.outputs, record.error]))


@pytest.fixture
def captured(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("apps", "portal", "celery", "django", "mlflow"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def test_seeded_ssns_and_emails_stay_out_of_logs_audit_jobs_and_viewer_exports(
        people, project, api_as, client_as, captured, sandbox, django_capture_on_commit_callbacks):  # noqa: F811
    scientist, viewer, admin = (api_as(people[r]) for r in ("scientist", "viewer", "admin"))
    source = profile(upload(scientist, "people", seeded_csv(), "people.csv"))
    assert source.status == "ready", source.error
    assert {"ssn", "email"} <= set(source.pii_columns)
    assert SECRET.search(json.dumps(rows_of(scientist, source)))  # scientists see them: the promise is for viewers

    # The pages as a scientist (who sees the values): nothing of them in the logs, even at DEBUG.
    for page in (f"/datasets/{source.dataset.uuid}/v{source.number}/",
                 f"/datasets/{source.dataset.uuid}/v{source.number}/rows/"):
        assert client_as(people["scientist"]).get(page).status_code == 200
    assert_no_secret("the application log", captured.text)

    # The grid, the profile and the pages, as a viewer.
    assert_no_secret("the viewer's rows", json.dumps(rows_of(viewer, source)))
    detail = viewer.get(f"/api/v1/datasets/{source.dataset.uuid}/versions/{source.number}/")
    assert_no_secret("the viewer's profile", detail.content.decode())
    for page in (f"/datasets/{source.dataset.uuid}/v{source.number}/",
                 f"/datasets/{source.dataset.uuid}/v{source.number}/rows/"):
        assert_no_secret(f"the viewer's page {page}", client_as(people["viewer"]).get(page).content.decode())

    # Anonymisation: a derived version whose values nobody can read back.
    started = scientist.post(f"/api/v1/datasets/{source.dataset.uuid}/versions/{source.number}/anonymise/",
                             {"plan": {"ssn": {"method": "hash"}, "email": {"method": "mask"}}}, format="json")
    assert started.status_code == 202, started.content
    with bounded(60):
        datasets.anonymise(started.json()["job"]["id"])
    derived = DatasetVersion.objects.get(parent=source)
    with bounded(60):
        datasets.profile_version(str(derived.profile_job_id))
    derived.refresh_from_db()
    assert derived.status == "ready", derived.error
    assert_no_secret("the anonymised rows", json.dumps(rows_of(scientist, derived)))

    # Batch scoring of the dataset version by a viewer: the model gets its columns, the viewer's file has no PII.
    churn = import_skops(project, people["scientist"], django_capture_on_commit_callbacks)  # age, income, tenure
    deployment = deployments.deploy(project, actor=people["scientist"], name="Churn", environment=sandbox,
                                    version=churn)
    with django_capture_on_commit_callbacks(execute=False):
        started = viewer.post(f"/api/v1/deployments/{deployment.slug}/batch/",
                              {"dataset_version": str(source.uuid), "keep_extra_columns": True}, format="json")
    assert started.status_code == 202, started.content
    run = run_batch(started.json()["job"]["id"], django_capture_on_commit_callbacks)
    assert run.job.status == "succeeded", run.job.error
    result = viewer.get(f"/api/v1/deployments/{deployment.slug}/batch/{run.uuid}/result/")
    content = b"".join(result.streaming_content).decode()
    assert "ssn" not in content.splitlines()[0] and "income" in content.splitlines()[0]
    assert_no_secret("the viewer's batch result", content)

    # An online request that sends personal data the model does not take: refused without echoing it.
    refused = viewer.post(f"/api/v1/deployments/{deployment.slug}/invocations",
                          {"dataframe_records": [{"age": 30, "income": 1.0, "tenure": 2, "email": EMAILS[0]}]},
                          format="json")
    assert refused.status_code == 400
    assert_no_secret("the refusal", refused.content.decode())
    predlog.drain()

    export = admin.get(f"/api/v1/deployments/{deployment.slug}/predictions/export/", {"format": "csv"})
    assert export.status_code == 200
    assert_no_secret("the prediction-log export", b"".join(export.streaming_content).decode())
    audit_csv = client_as(people["staff"]).get("/audit/export.csv")
    assert_no_secret("the audit export", b"".join(audit_csv.streaming_content).decode())
    assert_nothing_leaked(captured)


def test_a_broken_row_is_quoted_in_the_error_without_its_personal_data(people, api_as, captured):
    content = seeded_csv() + f"41,{SSNS[1]},{EMAILS[1]},4111 1111 1111 1111,oops\n".encode()
    version = profile(upload(api_as(people["scientist"]), "broken", content, "broken.csv"))
    assert version.status == "failed"
    assert "Line 42 has 5 values but the header has 6 columns: “41,[hidden],[hidden],[hidden],oops”" in version.error
    shown = api_as(people["viewer"]).get(f"/api/v1/datasets/{version.dataset.uuid}/versions/{version.number}/")
    assert_no_secret("the version's error as a viewer reads it", shown.content.decode())
    assert_nothing_leaked(captured)
