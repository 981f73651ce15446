"""Registry fixtures: real model files (skops, ONNX, MLflow zip), a per-session MLflow store, the import job."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.core.models import Job
from apps.registry import services
from apps.registry.models import ModelVersion

FEATURES = ["age", "income", "tenure"]


def training_frame(rows: int = 200, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, rows),
        "income": rng.normal(40_000, 12_000, rows).round(2),
        "tenure": rng.integers(0, 30, rows),
    })
    frame["churned"] = ((frame["age"] < 35) & (frame["tenure"] < 5)).astype(int)
    return frame


def fitted_tree():
    from sklearn.tree import DecisionTreeClassifier

    frame = training_frame()
    return DecisionTreeClassifier(max_depth=3, random_state=0).fit(frame[FEATURES], frame["churned"])


def skops_bytes(model=None) -> bytes:
    import skops.io as sio

    return sio.dumps(model if model is not None else fitted_tree())


def onnx_bytes() -> bytes:
    from skl2onnx import to_onnx

    model = fitted_tree()
    return to_onnx(model, training_frame()[FEATURES].to_numpy().astype(np.float32)[:1],
                   options={id(model): {"zipmap": False}}).SerializeToString()


def mlflow_zip_bytes(tmp_path: Path, *, serialization_format: str = "skops") -> bytes:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    frame = training_frame()
    model = fitted_tree()
    directory = tmp_path / "exported-model"
    mlflow.sklearn.save_model(
        model, str(directory), serialization_format=serialization_format,
        skops_trusted_types=["sklearn.tree._tree.Tree"] if serialization_format == "skops" else None,
        signature=infer_signature(frame[FEATURES], model.predict(frame[FEATURES])),
        pip_requirements=["scikit-learn"],
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in directory.rglob("*"):
            archive.write(path, path.relative_to(directory.parent).as_posix())
    return buffer.getvalue()


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def run_import(version: ModelVersion) -> ModelVersion:
    """Run the version's current import job in this process, exactly as the Celery task does."""
    job = Job.objects.get(pk=version.import_job_id)
    services.import_version(str(job.id))
    version.refresh_from_db()
    return version


def import_file(api, filename: str, content: bytes, *, name: str = "Churn", **fields):
    """POST a model file to the import API as project alpha's member behind `api`."""
    body = {"project": "alpha", "name": name, "file": upload(filename, content), **fields}
    return api.post("/api/v1/models/import/", body, format="multipart")


def imported(api, filename: str, content: bytes, capture, **fields) -> ModelVersion:
    """Import through the API, then run the import job in this process (`capture`: the on-commit fixture)."""
    with capture(execute=False):
        response = import_file(api, filename, content, **fields)
    assert response.status_code == 202, response.content
    return run_import(ModelVersion.objects.get(uuid=response.json()["id"]))


@pytest.fixture(scope="session")
def _mlflow_store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(autouse=True)
def mlflow_store(settings, _mlflow_store, tmp_path):
    """One MLflow store for the session (creating its SQLite schema takes seconds), media per test."""
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{_mlflow_store / 'mlflow.db'}"
    settings.MLFLOW_ARTIFACT_ROOT = str(_mlflow_store / "artifacts")
    settings.MEDIA_ROOT = tmp_path / "media"
    return _mlflow_store
