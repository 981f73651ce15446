"""Model pages: the project's models, a model's versions and the comparison, for each role."""

from __future__ import annotations

import pytest

from apps.registry import services
from apps.registry.models import ModelVersion
from tests.registry.conftest import run_import, skops_bytes, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(people, project, django_capture_on_commit_callbacks):
    versions = []
    for accuracy in (0.81, 0.86):
        with django_capture_on_commit_callbacks(execute=False):
            version = services.start_import(
                project, actor=people["scientist"], name="Churn", uploaded=upload("tree.skops", skops_bytes()),
                lineage={"metrics": {"accuracy": accuracy}, "params": {"max_depth": "3"},
                         "input_example": [{"age": 30, "income": 41000.5, "tenure": 2}]},
            )
        versions.append(run_import(version))
    return versions


def test_model_list_shows_models_with_their_latest_version(people, two_versions, client_as):
    response = client_as(people["viewer"]).get("/projects/alpha/models/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-model="churn"' in body and "v2" in body
    assert "Import a model" not in body, "viewers cannot import"


def test_model_list_empty_state_and_search(people, project, client_as):
    client = client_as(people["scientist"])
    assert "No models yet." in client.get("/projects/alpha/models/").content.decode()
    assert "No model matches" in client.get("/projects/alpha/models/?q=zzz").content.decode()


def test_model_page_lists_versions_and_charts_metrics(people, two_versions, client_as):
    body = client_as(people["viewer"]).get("/models/churn/").content.decode()
    assert 'data-version="2"' in body and 'data-version="1"' in body
    assert 'id="metrics-chart"' in body


def test_compare_highlights_differences(people, two_versions, client_as, api_as):
    body = client_as(people["viewer"]).get("/models/churn/compare/?v=1&v=2").content.decode()
    assert "accuracy" in body and "table-warning" in body
    report = api_as(people["viewer"]).get("/api/v1/models/churn/compare/?versions=1,2").json()
    accuracy = next(r for r in report["metrics"] if r["name"] == "accuracy")
    assert accuracy == {"name": "accuracy", "values": [0.81, 0.86], "differs": True}
    assert next(r for r in report["params"] if r["name"] == "max_depth")["differs"] is False
    bad = api_as(people["viewer"]).get("/api/v1/models/churn/compare/?versions=1,9")
    assert bad.status_code == 400 and "no version v9" in bad.json()["errors"]["versions"][0]
    assert client_as(people["viewer"]).get("/models/churn/compare/?v=1").status_code == 400


def test_outsiders_get_404_everywhere(people, two_versions, client_as, api_as):
    client, api = client_as(people["outsider"]), api_as(people["outsider"])
    assert client.get("/projects/alpha/models/").status_code == 404
    assert client.get("/models/churn/").status_code == 404
    assert api.get("/api/v1/models/churn/").status_code == 404
    assert api.get(f"/api/v1/model-versions/{two_versions[0].uuid}/").status_code == 404
    assert api.get("/api/v1/models/").json()["count"] == 0


def test_version_api_edits_labels_but_not_status(people, two_versions, api_as):
    version = two_versions[0]
    api = api_as(people["scientist"])
    url = f"/api/v1/model-versions/{version.uuid}/"
    assert api.patch(url, {"status": "ready", "sha256": "0" * 64}, format="json").status_code == 400
    response = api.patch(url, {"aliases": ["champion"], "description": "first cut"}, format="json")
    assert response.status_code == 200 and response.json()["aliases"] == ["champion"]
    api.patch(f"/api/v1/model-versions/{two_versions[1].uuid}/", {"aliases": ["champion"]}, format="json")
    version.refresh_from_db()
    assert version.aliases == [], "an alias moves to the version it now names"
    assert api_as(people["viewer"]).patch(url, {"description": "x"}, format="json").status_code == 403
    versions = api.get("/api/v1/models/churn/versions/").json()
    assert [v["number"] for v in versions["results"]] == [2, 1]


def test_archive_and_restore_are_for_admins_and_audited(people, two_versions, api_as):
    from apps.audit.models import AuditEvent

    version = two_versions[0]
    base = f"/api/v1/model-versions/{version.uuid}"
    assert api_as(people["scientist"]).post(f"{base}/archive/").status_code == 403
    admin = api_as(people["admin"])
    assert admin.post(f"{base}/archive/").json()["status"] == "archived"
    assert admin.post(f"{base}/archive/").status_code == 400
    assert admin.post(f"{base}/restore/").json()["status"] == "ready"
    assert AuditEvent.objects.filter(action__in=["model.archive", "model.restore"]).count() == 2
    assert ModelVersion.objects.filter(pk=version.pk, status="ready").exists()


def test_a_dataset_used_as_training_data_cannot_be_deleted(people, project, client_as, api_as,
                                                           django_capture_on_commit_callbacks):
    from apps.datasets import services as dataset_services
    from tests.datasets.conftest import PEOPLE_CSV, run_profiling

    with django_capture_on_commit_callbacks(execute=False):
        dataset_version, _ = dataset_services.upload(project, actor=people["scientist"], name="customers",
                                                     uploaded=upload("people.csv", PEOPLE_CSV))
    run_profiling(dataset_version)
    with django_capture_on_commit_callbacks(execute=False):
        services.start_import(project, actor=people["scientist"], name="Other",
                              uploaded=upload("t.skops", skops_bytes()),
                              lineage={"training_dataset": str(dataset_version.uuid)})
    response = api_as(people["admin"]).delete(f"/api/v1/datasets/{dataset_version.dataset.uuid}/")
    assert response.status_code == 409
    assert "Other v1" in response.json()["detail"]
