"""Personal data: PII columns are hidden from viewers everywhere until an admin reveals them (audited)."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _version_url(v):
    return f"/api/v1/datasets/{v.dataset.uuid}/versions/{v.number}/"


def test_viewer_sees_no_values_of_pii_columns_in_profile_page_or_rows(people, profiled, api_as, client_as):
    api = api_as(people["viewer"])
    detail = api.get(_version_url(profiled)).json()
    assert "email" in detail["hidden_columns"]
    email = next(c for c in detail["profile"]["columns"] if c["name"] == "email")
    assert email.get("hidden") is True and "top_values" not in email
    rows = api.get(_version_url(profiled) + "rows/").json()
    assert "email" not in rows["columns"] and "email" not in rows["results"][0]
    assert api.get(_version_url(profiled) + "rows/", {"sort": "email"}).status_code == 400
    page = client_as(people["viewer"]).get(f"/datasets/{profiled.dataset.uuid}/v1/").content.decode()
    assert "@example.org" not in page


def test_scientist_sees_pii_columns(people, profiled, api_as):
    rows = api_as(people["scientist"]).get(_version_url(profiled) + "rows/").json()
    assert "email" in rows["columns"] and rows["results"][0]["email"].endswith("@example.org")


def test_only_admin_can_reveal_and_it_is_audited(people, profiled, api_as):
    assert api_as(people["scientist"]).post(_version_url(profiled) + "reveal/", {"column": "email"},
                                            format="json").status_code == 403
    response = api_as(people["admin"]).post(_version_url(profiled) + "reveal/", {"column": "email"}, format="json")
    assert response.status_code == 200 and response.json()["revealed_columns"] == ["email"]
    rows = api_as(people["viewer"]).get(_version_url(profiled) + "rows/").json()
    assert "email" in rows["columns"]
    event = AuditEvent.objects.get(action="dataset.pii_reveal")
    assert event.actor == people["admin"] and event.details == {"column": "email"}
    bad = api_as(people["admin"]).post(_version_url(profiled) + "reveal/", {"column": "age"}, format="json")
    assert bad.status_code == 400 and "column" in bad.json()["errors"]


def test_outsider_gets_404_everywhere(people, profiled, api_as, client_as):
    api = api_as(people["outsider"])
    assert api.get(f"/api/v1/datasets/{profiled.dataset.uuid}/").status_code == 404
    assert api.get(_version_url(profiled)).status_code == 404
    assert api.get(_version_url(profiled) + "rows/").status_code == 404
    client = client_as(people["outsider"])
    assert client.get(f"/datasets/{profiled.dataset.uuid}/v1/").status_code == 404
    assert client.get("/projects/alpha/datasets/").status_code == 404


def test_only_admin_deletes_and_files_go_with_the_dataset(people, profiled, api_as,
                                                          django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    url = f"/api/v1/datasets/{profiled.dataset.uuid}/"
    files = [profiled.file_name, profiled.parquet_name]
    assert all(default_storage.exists(name) for name in files)
    assert api_as(people["scientist"]).delete(url).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        assert api_as(people["admin"]).delete(url).status_code == 204
    assert not any(default_storage.exists(name) for name in files)
    assert AuditEvent.objects.filter(action="dataset.delete", actor=people["admin"]).exists()
