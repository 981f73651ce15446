"""Every registry API route with a version or model in it: outsiders get 404, viewers 403 on what changes things."""

from __future__ import annotations

import pytest

from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(people, project):
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"])
    return ModelVersion.objects.create(model=model, number=1, status=ModelVersion.Status.READY, format="skops",
                                       created_by=people["scientist"], sha256="a" * 64, artifact_sha256="b" * 64,
                                       mlflow_model_uri="models:/portal.churn/1")


READS = ["models/churn/", "models/churn/versions/", "models/churn/compare/?versions=1,1",
         "model-versions/{id}/", "model-versions/{id}/validations/", "model-versions/{id}/card.html",
         "model-versions/{id}/audit-packet/"]
WRITES = ["model-versions/{id}/archive/", "model-versions/{id}/restore/", "model-versions/{id}/trust/",
          "model-versions/{id}/reexamine/", "model-versions/{id}/explain/", "model-versions/{id}/validate/",
          "model-versions/{id}/optimise/", "model-versions/{id}/register-onnx/", "models/churn/follow/"]


@pytest.mark.parametrize("route", READS + WRITES)
def test_outsiders_get_404(people, version, api_as, route):
    url = "/api/v1/" + route.format(id=version.uuid)
    api = api_as(people["outsider"])
    response = api.get(url) if route in READS else api.post(url, {}, format="json")
    assert response.status_code == 404, (url, response.status_code)


@pytest.mark.parametrize("route", WRITES)
def test_viewers_get_403_on_what_changes_things(people, version, api_as, route):
    url = "/api/v1/" + route.format(id=version.uuid)
    body = {"dataset_version": "00000000-0000-0000-0000-000000000000", "mlflow_name": "x"}
    response = api_as(people["viewer"]).post(url, body, format="json")
    assert response.status_code == 403, (url, response.status_code, response.content[:200])


def test_viewers_may_patch_nothing(people, version, api_as):
    api = api_as(people["viewer"])
    assert api.patch("/api/v1/models/churn/", {"description": "x"}, format="json").status_code == 403
    assert api.patch(f"/api/v1/model-versions/{version.uuid}/", {"description": "x"}, format="json").status_code == 403
