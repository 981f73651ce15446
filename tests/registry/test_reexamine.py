"""A quarantined import can be examined again after its training rows are linked, without anyone trusting it."""

from __future__ import annotations

import pickle

import pytest

from apps.audit.models import AuditEvent
from apps.registry.models import ModelVersion
from tests.registry.conftest import fitted_tree, run_import, upload

pytestmark = pytest.mark.django_db
EXAMPLE = [{"age": 30, "income": 41000.5, "tenure": 2}, {"age": 61, "income": 22000.0, "tenure": 14}]


def imported_pickle(api, capture) -> ModelVersion:
    with capture(execute=False):
        response = api.post("/api/v1/models/import/", {"project": "alpha", "name": "Churn",
                                                       "file": upload("tree.pkl", pickle.dumps(fitted_tree()))},
                            format="multipart")
    return run_import(ModelVersion.objects.get(uuid=response.json()["id"]))


def test_linking_an_input_example_turns_an_unchecked_conversion_ready(people, api_as,
                                                                       django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    version = imported_pickle(api, django_capture_on_commit_callbacks)
    assert version.status == "quarantined" and version.safety["verdict"] == "converted_unchecked"
    url = f"/api/v1/model-versions/{version.uuid}/reexamine/"
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(url, {"input_example": EXAMPLE}, format="json")
    assert response.status_code == 202, response.content
    version.refresh_from_db()
    assert version.status == "importing"
    run_import(version)
    assert version.status == "ready" and version.safety["verdict"] == "converted", version.safety
    assert version.mlflow_model_uri and not version.trusted_by_id
    assert AuditEvent.objects.filter(action="model.reexamine").exists()
    again = api.post(url, {}, format="json")
    assert again.status_code == 400 and "only quarantined" in again.json()["errors"]["status"][0]


def test_reexamine_needs_the_import_right_and_refuses_other_fields(people, api_as,
                                                                   django_capture_on_commit_callbacks):
    version = imported_pickle(api_as(people["scientist"]), django_capture_on_commit_callbacks)
    url = f"/api/v1/model-versions/{version.uuid}/reexamine/"
    assert api_as(people["viewer"]).post(url, {}, format="json").status_code == 403
    assert api_as(people["outsider"]).post(url, {}, format="json").status_code == 404
    bad = api_as(people["scientist"]).post(url, {"training_dataset": "00000000-0000-0000-0000-000000000000"},
                                           format="json")
    assert bad.status_code == 400 and "training_dataset" in bad.json()["errors"]
    version.refresh_from_db()
    assert version.status == "quarantined", "a refused request changes nothing"


def test_the_card_offers_to_examine_again_and_does_it(people, api_as, client_as, django_capture_on_commit_callbacks):
    import json

    version = imported_pickle(api_as(people["scientist"]), django_capture_on_commit_callbacks)
    card = f"/models/churn/v{version.number}/"
    assert 'id="reexamine"' in client_as(people["scientist"]).get(card).content.decode()
    assert 'id="reexamine"' not in client_as(people["viewer"]).get(card).content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = client_as(people["scientist"]).post(f"{card}reexamine/", {"input_example": json.dumps(EXAMPLE)})
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == "importing" and version.input_example["columns"] == ["age", "income", "tenure"]
    assert client_as(people["viewer"]).post(f"{card}reexamine/", {}).status_code == 403
