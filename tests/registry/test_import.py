"""Importing model files through the API: skops, ONNX and MLflow zips become MLflow artifacts; bad files don't."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.registry.models import ModelVersion, RegisteredModel
from tests.registry.conftest import mlflow_zip_bytes, onnx_bytes, run_import, skops_bytes, upload

pytestmark = pytest.mark.django_db


def import_file(api, filename: str, content: bytes, **fields):
    body = {"project": "alpha", "name": "Churn", "file": upload(filename, content), **fields}
    return api.post("/api/v1/models/import/", body, format="multipart")


def test_skops_import_creates_a_ready_version_stored_in_mlflow(people, api_as, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = import_file(api, "tree.skops", skops_bytes(), format="skops", task_type="classification",
                               risk_tier="high", code_commit="3f9c2ab", metrics='{"accuracy": 0.93}',
                               input_example='[{"age": 30, "income": 41000.5, "tenure": 2}]')
    assert response.status_code == 202, response.content
    assert len(queued) == 1 and response.json()["version"] == 1
    version = ModelVersion.objects.get(uuid=response.json()["id"])
    assert version.status == "importing"
    run_import(version)
    assert version.status == "ready", version.error
    assert version.mlflow_model_uri.startswith("models:/portal.churn/")
    assert [c["name"] for c in version.signature["inputs"]] == ["age", "income", "tenure"]
    assert version.metrics == {"accuracy": 0.93} and version.code_commit == "3f9c2ab"
    assert len(version.artifact_sha256) == 64
    detail = api.get(response.json()["url"]).json()
    assert detail["status"] == "ready" and detail["flavor"] == "sklearn (skops)"
    assert RegisteredModel.objects.get(slug="churn").risk_tier == "high"
    assert AuditEvent.objects.filter(action="model.imported").exists()


def test_onnx_and_mlflow_zip_imports(people, api_as, tmp_path, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        onnx = import_file(api, "tree.onnx", onnx_bytes(), format="onnx",
                           input_example='[{"age": 30, "income": 41000.5, "tenure": 2}]')
        zipped = import_file(api, "model.zip", mlflow_zip_bytes(tmp_path), format="mlflow")
    assert onnx.status_code == 202 and zipped.status_code == 202, (onnx.content, zipped.content)
    first = run_import(ModelVersion.objects.get(uuid=onnx.json()["id"]))
    second = run_import(ModelVersion.objects.get(uuid=zipped.json()["id"]))
    assert (first.status, first.flavor) == ("ready", "onnx"), first.error
    assert (second.status, second.number) == ("ready", 2), second.error
    assert second.signature["inputs"][0]["name"] == "age"


def test_mlflow_zip_that_needs_pickle_is_quarantined(people, api_as, tmp_path, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        response = import_file(api, "model.zip", mlflow_zip_bytes(tmp_path, serialization_format="cloudpickle"))
    version = run_import(ModelVersion.objects.get(uuid=response.json()["id"]))
    assert version.status == "quarantined" and not version.mlflow_model_uri
    assert "pickle" in version.safety["summary"]


@pytest.mark.parametrize(
    ("filename", "content", "claimed", "message"),
    [
        ("empty.skops", b"", "skops", "empty"),
        ("model.onnx", b"PK\x03\x04" + b"\x00" * 40, "onnx", "damaged"),
        ("notes.txt", b"hello, I am not a model", None, "cannot tell"),
    ],
)
def test_bad_files_are_refused_naming_the_file_field(people, api_as, filename, content, claimed, message):
    fields = {"format": claimed} if claimed else {}
    response = import_file(api_as(people["scientist"]), filename, content, **fields)
    assert response.status_code == 400
    assert message in response.json()["errors"]["file"][0]
    assert not RegisteredModel.objects.exists(), "nothing is half-created"


def test_a_file_whose_content_is_not_the_claimed_format_is_refused(people, api_as):
    response = import_file(api_as(people["scientist"]), "tree.onnx", skops_bytes(), format="onnx")
    assert response.status_code == 400
    assert "its content is a scikit-learn model saved with skops" in response.json()["errors"]["file"][0]


def test_viewer_cannot_import_and_outsider_cannot_see_the_project(people, api_as):
    assert import_file(api_as(people["viewer"]), "t.skops", skops_bytes()).status_code == 403
    response = import_file(api_as(people["outsider"]), "t.skops", skops_bytes())
    assert response.status_code == 400 and "project" in response.json()["errors"]
