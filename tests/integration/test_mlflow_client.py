"""Done-when for MLflow both ways: a scientist logs and registers a model with the plain `mlflow` client on a
real tracking server (started here), and the portal imports it through the API with its run's lineage."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from apps.registry import mlflow_store
from apps.registry.models import ModelVersion
from tests.registry.conftest import FEATURES, run_import, training_frame

pytestmark = pytest.mark.django_db

COMMIT = "feedc0de" * 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrackingServer:
    def __init__(self, root: Path):
        self.root = root
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = (root / "server.log").open("w")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--allowed-hosts", f"127.0.0.1:{port},127.0.0.1,localhost:{port},localhost"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=root,
        )

    def wait_ready(self, seconds: float = 120) -> str:
        # Its start-up (imports, SQLite schema) takes ~10 s on an idle machine and much longer on a busy one.
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.url
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`mlflow server` on SQLite with served artifacts on a free local port, stopped at the end; the test
    does its own preparation while the server starts."""
    server = TrackingServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


def fitted_model():
    from sklearn.linear_model import LogisticRegression

    frame = training_frame()
    return LogisticRegression(max_iter=500).fit(frame[FEATURES], frame["churned"])


def log_like_a_scientist(url: str, model) -> str:
    import mlflow
    import mlflow.sklearn

    frame = training_frame()
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    mlflow.set_experiment("churn")
    with mlflow.start_run() as run:
        mlflow.set_tag("mlflow.source.git.commit", COMMIT)
        mlflow.log_param("C", 1.0)
        mlflow.log_param("max_iter", 500)
        mlflow.log_metric("accuracy", 0.91)
        mlflow.sklearn.log_model(model, name="model", registered_model_name="churn-model",
                                 input_example=frame[FEATURES].head(5))
    return run.info.run_id


def test_a_model_logged_with_the_plain_client_imports_through_the_api(
    tracking_server, settings, people, api_as, django_capture_on_commit_callbacks
):
    import mlflow.sklearn  # noqa: F401 - imported while the server starts

    model = fitted_model()
    url = tracking_server.wait_ready()
    run_id = log_like_a_scientist(url, model)
    settings.MLFLOW_TRACKING_URI = url
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post("/api/v1/models/import-mlflow/",
                            {"project": "alpha", "model_uri": "models:/churn-model/1"}, format="json")
    assert response.status_code == 202, response.content
    version = run_import(ModelVersion.objects.get(uuid=response.json()["id"]))
    assert version.status == "ready", version.error
    assert version.params == {"C": "1.0", "max_iter": "500"}
    assert version.metrics == {"accuracy": 0.91}
    assert version.code_commit == COMMIT
    assert any(r.startswith("scikit-learn") for r in version.requirements), version.requirements
    assert version.mlflow_tags["mlflow.source.git.commit"] == COMMIT

    portal_name = f"portal.{version.model.slug}"
    assert version.mlflow_model_uri.startswith(f"models:/{portal_name}/")
    stored = mlflow_store.client().get_model_version(portal_name, version.mlflow_model_uri.rsplit("/", 1)[1])
    assert stored.run_id == version.mlflow_run_id and stored.run_id != run_id
    detail = api.get(response.json()["url"]).json()
    assert detail["status"] == "ready" and detail["source_uri"] == "models:/churn-model/1"
