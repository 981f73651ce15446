"""Importing from the MLflow tracking server: URI checks, lineage from the run, quarantine, browse, follow, sync."""

from __future__ import annotations

import socket

import pytest

from apps.audit.models import AuditEvent
from apps.registry import mlflow_source
from apps.registry.models import ModelVersion, RegisteredModel
from tests.registry.conftest import FEATURES, run_import, training_frame

pytestmark = pytest.mark.django_db

COMMIT = "0123456789abcdef0123456789abcdef01234567"



def log_scientist_models(uri: str, artifacts) -> dict:
    """What a data scientist does with the plain client: runs with params/metrics/tags, registered models."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    frame = training_frame()
    model = LogisticRegression(max_iter=500).fit(frame[FEATURES], frame["churned"])
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("scientists")
    # Not mlflow.set_experiment: it is process-wide and would follow later tests to other servers.
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "scientists", artifact_location=artifacts.as_uri())
    runs = {}
    for key, accuracy in (("v1", 0.9), ("v2", 0.93)):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"churn {key}") as run:
            mlflow.set_tags({"mlflow.source.git.commit": COMMIT, "team": "risk", "api_token": "s3cr3t",
                             "mlflow.source.git.repoURL": "https://bot:ghp_abc@git.example.org/risk/churn.git"})
            mlflow.log_param("C", "1.0")
            mlflow.log_metric("accuracy", 0.5)
            mlflow.log_metric("accuracy", accuracy)
            mlflow.sklearn.log_model(model, name="model", registered_model_name="churn-model",
                                     input_example=frame[FEATURES].head(3))
            runs[key] = run.info.run_id
    client.set_registered_model_alias("churn-model", "champion", "1")
    with mlflow.start_run(experiment_id=experiment_id, run_name="pickled") as run:
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle",
                                 registered_model_name="pickled-model")
        runs["pickled"] = run.info.run_id
    return runs


@pytest.fixture(scope="session")
def server_runs(_mlflow_store):
    return log_scientist_models(f"sqlite:///{_mlflow_store / 'mlflow.db'}", _mlflow_store / "scientists")


def post_import(api, uri: str, **fields):
    return api.post("/api/v1/models/import-mlflow/", {"project": "alpha", "model_uri": uri, **fields}, format="json")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:///etc/passwd", "Only models:/"),
        ("http://evil.example/model", "Only models:/"),
        ("s3://bucket/model", "Only models:/"),
        ("mlflow-artifacts:/0/abc/artifacts/model", "Only models:/"),
        ("runs:/0123abcd/../../../etc", "must stay inside the run"),
        ("runs:/0123abcd//etc/passwd", "must stay inside the run"),
        ("runs:/0123abcd/model/./x", "must stay inside the run"),
        ("models:/churn-model/latest/../1", "models:/<registered model name>"),
        ("models:/churn-model", "models:/<registered model name>"),
        ("models:/portal.churn/1", "portal's own copies"),
        ("", "Give the model's MLflow URI"),
    ],
)
def test_bad_uris_are_refused_before_anything_is_created(people, api_as, uri, message):
    with pytest.raises(Exception) as raised:
        mlflow_source.parse_model_uri(uri)
    assert message in str(raised.value)
    response = post_import(api_as(people["scientist"]), uri) if uri else None
    if response is not None:
        assert response.status_code == 400
    assert not RegisteredModel.objects.exists() and not ModelVersion.objects.exists()


def test_uri_that_does_not_exist_on_the_server_is_a_400(people, api_as, server_runs):
    api = api_as(people["scientist"])
    for uri in ("models:/no-such-model/1", "models:/churn-model/99", "models:/churn-model@nobody",
                f"runs:/{'0' * 32}/model", f"runs:/{server_runs['v1']}/not-there"):
        response = post_import(api, uri)
        assert response.status_code == 400, (uri, response.content)
        assert "model_uri" in response.json()["errors"], response.json()
    assert not RegisteredModel.objects.exists() and not ModelVersion.objects.exists()


def test_registered_version_by_alias_imports_with_its_runs_lineage(people, api_as, server_runs,
                                                                   django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = post_import(api, "models:/churn-model@champion", risk_tier="high")
    assert response.status_code == 202, response.content
    assert len(queued) == 1
    body = response.json()
    assert body["source_uri"] == "models:/churn-model/1" and body["model"] == "churn-model"
    version = run_import(ModelVersion.objects.get(uuid=body["id"]))
    assert version.status == "ready", version.error
    assert version.format == "mlflow_server"
    assert version.params == {"C": "1.0"} and version.metrics == {"accuracy": 0.9}
    assert version.code_commit == COMMIT
    assert version.code_repository == "https://git.example.org/risk/churn.git", "credentials stripped"
    assert version.mlflow_tags["team"] == "risk" and "api_token" not in version.mlflow_tags
    assert version.mlflow_tags["mlflow.source.git.commit"] == COMMIT
    assert any(r.startswith("scikit-learn") for r in version.requirements)
    assert [c["name"] for c in version.signature["inputs"]] == FEATURES
    assert version.input_example["columns"] == FEATURES
    assert version.mlflow_model_uri.startswith("models:/portal.churn-model/")
    assert len(version.safety["source_sha256"]) == 64 and version.safety["verdict"] == "safe_format"
    assert RegisteredModel.objects.get(slug="churn-model").risk_tier == "high"
    again = post_import(api, "models:/churn-model/1")
    assert again.status_code == 400 and "already imported" in again.json()["errors"]["model_uri"][0]


def test_a_runs_uri_imports_under_the_given_name(people, api_as, server_runs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = post_import(api_as(people["scientist"]), f"runs:/{server_runs['v2']}/model", name="Churn (run)",
                               code_commit="abcdef1")
    assert response.status_code == 202, response.content
    version = run_import(ModelVersion.objects.get(uuid=response.json()["id"]))
    assert version.status == "ready", version.error
    assert version.model.name == "Churn (run)" and version.source_uri == f"runs:/{server_runs['v2']}/model"
    assert version.metrics == {"accuracy": 0.93}
    assert version.code_commit == "abcdef1", "what the person typed wins over the run's tag"


def test_a_model_that_needs_pickle_is_quarantined(people, api_as, server_runs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = post_import(api_as(people["scientist"]), "models:/pickled-model/1")
    assert response.status_code == 202, response.content
    version = run_import(ModelVersion.objects.get(uuid=response.json()["id"]))
    assert version.status == "quarantined" and not version.mlflow_model_uri
    assert "pickle" in version.safety["summary"] and len(version.safety["source_sha256"]) == 64
    assert not version.is_servable


def test_viewer_gets_403_and_outsider_400(people, api_as, server_runs):
    assert post_import(api_as(people["viewer"]), "models:/churn-model/1").status_code == 403
    response = post_import(api_as(people["outsider"]), "models:/churn-model/1")
    assert response.status_code == 400 and "project" in response.json()["errors"]
    assert not ModelVersion.objects.exists()


def test_follow_and_sync_import_new_versions_once(people, api_as, project, server_runs,
                                                  django_capture_on_commit_callbacks):
    scientist = people["scientist"]
    with django_capture_on_commit_callbacks(execute=False):
        first = mlflow_source.start_mlflow_import(project, actor=scientist, model_uri="models:/churn-model/1")
    model = first.model
    viewer = api_as(people["viewer"]).post(f"/api/v1/models/{model.slug}/follow/", {"mlflow_name": "churn-model"},
                                           format="json")
    assert viewer.status_code == 403
    missing = api_as(scientist).post(f"/api/v1/models/{model.slug}/follow/", {"mlflow_name": "nope"}, format="json")
    assert missing.status_code == 400 and "mlflow_name" in missing.json()["errors"]
    response = api_as(scientist).post(f"/api/v1/models/{model.slug}/follow/", {"mlflow_name": "churn-model"},
                                      format="json")
    assert response.status_code == 200 and response.json()["follow_mlflow_name"] == "churn-model"
    assert AuditEvent.objects.filter(action="model.follow_mlflow").count() == 1
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert mlflow_source.sync_followed_models() == 1
        assert mlflow_source.sync_followed_models() == 0
    assert len(queued) == 1
    assert sorted(model.versions.values_list("source_uri", flat=True)) == [
        "models:/churn-model/1", "models:/churn-model/2"]
    assert model.versions.get(number=2).created_by == scientist


def test_sync_skips_a_creator_who_can_no_longer_import(people, project, server_runs):
    model = RegisteredModel.objects.create(project=project, name="Followed", slug="followed",
                                           follow_mlflow_name="churn-model", created_by=people["viewer"])
    assert mlflow_source.sync_followed_models() == 0
    assert not model.versions.exists()


def test_browse_api_lists_server_models_and_what_is_imported(people, api_as, project, server_runs,
                                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        mlflow_source.start_mlflow_import(project, actor=people["scientist"], model_uri="models:/churn-model/2")
    response = api_as(people["viewer"]).get("/api/v1/mlflow/models/", {"project": "alpha", "search": "churn"})
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [m["name"] for m in results] == ["churn-model"]
    versions = {v["version"]: v for v in results[0]["versions"]}
    assert versions[2]["imported"]["number"] == 1 and versions[1]["imported"] is None
    assert versions[1]["aliases"] == ["champion"] and versions[1]["run_id"] == server_runs["v1"]
    everything = api_as(people["viewer"]).get("/api/v1/mlflow/models/", {"project": "alpha"}).json()["results"]
    assert not [m for m in everything if m["name"].startswith("portal.")]
    assert api_as(people["outsider"]).get("/api/v1/mlflow/models/", {"project": "alpha"}).status_code == 400


def test_browse_page_shows_import_buttons_only_to_importers(people, client_as, server_runs):
    page = client_as(people["viewer"]).get("/projects/alpha/mlflow/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "churn-model" in html and "pickled-model" in html
    assert 'name="model_uri"' not in html
    html = client_as(people["scientist"]).get("/projects/alpha/mlflow/").content.decode()
    assert 'value="models:/churn-model/2"' in html and "csrfmiddlewaretoken" in html
    assert client_as(people["outsider"]).get("/projects/alpha/mlflow/").status_code == 404


def test_browse_page_import_button_starts_the_import(people, client_as, server_runs,
                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = client_as(people["scientist"]).post("/projects/alpha/mlflow/",
                                                       {"model_uri": "models:/churn-model/2"})
    assert response.status_code == 302
    version = ModelVersion.objects.get(source_uri="models:/churn-model/2")
    assert str(version.import_job_id) in response["Location"] or version.model.slug in response["Location"]
    denied = client_as(people["viewer"]).post("/projects/alpha/mlflow/", {"model_uri": "models:/churn-model/1"})
    assert denied.status_code == 403


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_is_a_clear_error_not_a_500(people, api_as, client_as, settings):
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{_closed_port()}"
    response = post_import(api_as(people["scientist"]), "models:/churn-model/1")
    assert response.status_code == 503 and "MLFLOW_TRACKING_URI" in response.json()["detail"]
    browse = api_as(people["viewer"]).get("/api/v1/mlflow/models/", {"project": "alpha"})
    assert browse.status_code == 503
    page = client_as(people["viewer"]).get("/projects/alpha/mlflow/")
    assert page.status_code == 200 and "MLFLOW_TRACKING_URI" in page.content.decode()
    assert not ModelVersion.objects.exists()
