"""A model's edit page: purpose, intended use, owner and risk, which the card, the approvers' evidence and the
readiness checklist read."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.registry import services

pytestmark = pytest.mark.django_db

URL = "/models/churn/edit/"


@pytest.fixture
def model(people, project):
    return services.create_model(project, actor=people["scientist"], name="Churn")


def form(**overrides) -> dict:
    return {"description": "Who may leave", "intended_use": "Retention calls, not pricing",
            "out_of_scope_uses": "Credit decisions", "owner": "scientist", "task_type": "classification",
            "risk_tier": "high", **overrides}


def test_a_scientist_names_the_owner_and_writes_the_intended_use(people, model, client_as):
    client = client_as(people["scientist"])
    page = client.get(URL + "?next=/models/churn/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'name="intended_use"' in body and 'name="owner"' in body and 'value="/models/churn/"' in body

    response = client.post(URL, form(next="/models/churn/"))
    assert response.status_code == 302 and response["Location"] == "/models/churn/"
    model.refresh_from_db()
    assert (model.owner, model.intended_use, model.risk_tier) == (people["scientist"], "Retention calls, not pricing",
                                                                   "high")
    event = AuditEvent.objects.filter(action="model.update").latest("sequence")
    assert set(event.details["fields"]) >= {"owner", "intended_use", "risk_tier"}


def test_bad_input_is_a_form_error_and_changes_nothing(people, model, client_as):
    client = client_as(people["scientist"])
    response = client.post(URL, form(owner="outsider", risk_tier="extreme"))
    assert response.status_code == 400
    body = response.content.decode()
    assert 'id="id_owner_error"' in body and 'id="id_risk_tier_error"' in body
    model.refresh_from_db()
    assert model.owner is None and model.intended_use == ""
    assert not AuditEvent.objects.filter(action="model.update").exists()


def test_an_unsafe_next_is_ignored(people, model, client_as):
    client = client_as(people["scientist"])
    page = client.get(URL + "?next=https://evil.example/").content.decode()
    assert "evil.example" not in page
    response = client.post(URL, form(next="javascript:alert(1)"))
    assert response["Location"] == "/models/churn/"


def test_only_editors_may_edit(people, model, client_as, client):
    assert client_as(people["outsider"]).get(URL).status_code == 404
    assert client_as(people["outsider"]).post(URL, form()).status_code == 404
    for role in ("viewer", "approver"):
        assert client_as(people[role]).get(URL).status_code == 403
        assert client_as(people[role]).post(URL, form()).status_code == 403
    assert client.get(URL).status_code == 302  # anonymous: to the sign-in page
    model.refresh_from_db()
    assert model.intended_use == ""
    assert client_as(people["admin"]).get(URL).status_code == 200


def test_the_model_page_links_to_it_for_editors_only(people, model, client_as):
    assert 'href="/models/churn/edit/"' in client_as(people["scientist"]).get("/models/churn/").content.decode()
    assert "/edit/" not in client_as(people["viewer"]).get("/models/churn/").content.decode()
