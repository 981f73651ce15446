"""The hash chain: real actions write linked events, and any edit or deletion of a row is detected."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from apps.accounts import services as account_services
from apps.audit import services as audit
from apps.audit.models import GENESIS_HASH, AuditEvent
from apps.audit.services import verify_chain
from tests.audit.conftest import ON_POSTGRES, dba_cursor
from tests.conftest import PASSWORD, make_user


def _chain() -> list[AuditEvent]:
    return list(AuditEvent.objects.order_by("sequence"))


def _assert_linked(events: list[AuditEvent]) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    previous = GENESIS_HASH
    for event in events:
        assert event.prev_hash == previous, f"event #{event.sequence} is not linked to its predecessor"
        assert event.hash == event.compute_hash()
        previous = event.hash


# --- Events are written by real actions --------------------------------------------------------------


def test_adding_a_member_records_actor_project_object_and_details(people, project):
    newcomer = make_user("newcomer")
    membership = account_services.add_member(project, actor=people["admin"], user=newcomer, role="scientist")

    event = AuditEvent.objects.get(action="membership.add")
    assert event.actor == people["admin"]
    assert event.actor_label == "admin"
    assert event.project == project
    assert event.object_type == "accounts.membership"
    assert event.object_id == str(membership.uuid), "a public id, never the sequential primary key"
    assert event.details == {"user": "newcomer", "role": "scientist"}
    _assert_linked(_chain())


def test_each_service_call_appends_one_event_linked_to_the_one_before(people, project):
    newcomer = make_user("newcomer")
    membership = account_services.add_member(project, actor=people["admin"], user=newcomer, role="viewer")
    account_services.change_role(membership, actor=people["admin"], role="approver")
    account_services.remove_member(membership, actor=people["staff"])

    events = _chain()
    assert [e.action for e in events] == ["membership.add", "membership.change_role", "membership.remove"]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[2].actor == people["staff"]
    _assert_linked(events)


def test_failed_action_leaves_no_event_and_no_gap(people, project):
    account_services.add_member(project, actor=people["admin"], user=make_user("newcomer"), role="viewer")
    with pytest.raises(ValidationError, match="already a member"):
        # The membership insert fails inside the service's transaction, so its audit row must not survive.
        account_services.add_member(project, actor=people["admin"], user=people["viewer"], role="viewer")
    account_services.add_member(project, actor=people["admin"], user=make_user("second"), role="viewer")

    assert [e.details["user"] for e in _chain()] == ["newcomer", "second"]
    _assert_linked(_chain())
    assert verify_chain().ok


def test_browser_login_failure_and_logout_are_recorded_with_the_client_ip(people, client):
    viewer = people["viewer"]
    client.post("/accounts/login/", {"username": "viewer", "password": "wrong"}, REMOTE_ADDR="198.51.100.4")
    client.post("/accounts/login/", {"username": "viewer", "password": PASSWORD}, REMOTE_ADDR="198.51.100.4")
    client.post("/accounts/logout/", REMOTE_ADDR="198.51.100.4")

    failed, login, logout = _chain()
    assert (failed.action, failed.actor, failed.actor_label) == ("auth.login_failed", None, "viewer")
    assert failed.details == {"attempt": 1, "locked": False}
    assert (login.action, login.actor, login.object_type, login.object_id) == (
        "auth.login", viewer, "accounts.user", str(viewer.uuid))
    assert (logout.action, logout.actor) == ("auth.logout", viewer)
    assert {e.client_ip for e in (failed, login, logout)} == {"198.51.100.4"}
    _assert_linked([failed, login, logout])


def test_forwarded_for_header_is_ignored_unless_the_proxy_is_trusted(people, client, settings):
    settings.USE_X_FORWARDED_FOR = False
    client.post("/accounts/login/", {"username": "viewer", "password": PASSWORD},
                REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert AuditEvent.objects.get(action="auth.login").client_ip == "10.0.0.2"

    settings.USE_X_FORWARDED_FOR = True
    client.post("/accounts/logout/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.9, 10.0.0.1")
    assert AuditEvent.objects.get(action="auth.logout").client_ip == "203.0.113.9"


def test_events_outside_a_request_have_no_client_ip(db):
    assert audit.record("system.tick").client_ip is None


# --- Verification ---------------------------------------------------------------------------------


def test_intact_chain_verifies(chain_of_five):
    report = verify_chain()
    assert (report.ok, report.events, report.first_bad) == (True, 5, None)


def test_empty_chain_verifies(db):
    report = verify_chain()
    assert (report.ok, report.events, report.first_bad) == (True, 0, None)


@pytest.mark.parametrize(("column", "value"), [
    ("details", json.dumps({"n": 999})),
    ("action", "test.other_step"),
    ("actor_label", "somebody-else"),
    ("client_ip", "192.0.2.66"),
], ids=["details", "action", "actor_label", "client_ip"])
def test_edited_row_is_detected_at_its_own_sequence(chain_of_five, column, value):
    with dba_cursor() as cursor:
        cursor.execute(f"UPDATE audit_auditevent SET {column} = %s WHERE sequence = 3", [value])

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 3)
    assert "does not match its hash" in report.reason


def test_rehashing_an_edited_row_only_moves_the_break_to_the_next_link(chain_of_five):
    forged = AuditEvent.objects.get(sequence=3)
    forged.details = {"n": 999}
    forged.hash = forged.compute_hash()
    with dba_cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET details = %s, hash = %s WHERE sequence = 3",
                       [json.dumps(forged.details), forged.hash])

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 4)
    assert "link" in report.reason


def test_deleted_row_is_detected_at_the_gap(chain_of_five):
    with dba_cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 3")

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 4)
    assert "#3 is missing" in report.reason


def test_deleted_last_row_is_detected_through_the_chain_head(chain_of_five):
    with dba_cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 5")

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 5)
    assert "expects 5 events but 4 exist" in report.reason


def test_event_appended_behind_the_heads_back_is_detected(chain_of_five):
    # A forger who can INSERT (the trigger allows it) and computes a valid hash still leaves the head behind.
    last = chain_of_five[-1]
    forged = AuditEvent(sequence=6, created_at=last.created_at, action="test.forged", prev_hash=last.hash)
    forged.hash = forged.compute_hash()
    AuditEvent.objects.bulk_create([forged])

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 6)
    assert "expects 5 events but 6 exist" in report.reason


def test_model_refuses_to_save_an_existing_event(chain_of_five):
    event = AuditEvent.objects.get(sequence=2)
    event.action = "test.rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    assert AuditEvent.objects.get(sequence=2).action == "test.step"


def test_model_refuses_to_delete_an_event(chain_of_five):
    with pytest.raises(ValueError, match="append-only"):
        AuditEvent.objects.get(sequence=2).delete()
    assert AuditEvent.objects.filter(sequence=2).exists()


@pytest.mark.skipif(not ON_POSTGRES, reason="the append-only trigger exists only on PostgreSQL")
@pytest.mark.parametrize("statement", [
    "UPDATE audit_auditevent SET action = 'test.rewritten' WHERE sequence = 2",
    "DELETE FROM audit_auditevent WHERE sequence = 2",
], ids=["update", "delete"])
def test_postgres_trigger_refuses_plain_sql_update_and_delete(chain_of_five, statement):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditEvent.objects.get(sequence=2).action == "test.step"
    assert verify_chain().ok


@pytest.mark.skipif(not ON_POSTGRES, reason="the append-only trigger exists only on PostgreSQL")
def test_postgres_trigger_refuses_orm_bulk_update_and_delete(chain_of_five):
    # QuerySet.update()/delete() bypass the model's save()/delete() guards; the trigger still holds.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(sequence=2).update(action="test.rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(sequence=2).delete()
    assert AuditEvent.objects.filter(sequence=2, action="test.step").exists()


# --- The three ways to ask: command, API, page --------------------------------------------------------


def test_verify_audit_command_reports_an_intact_chain(chain_of_five):
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "Audit chain OK: 5 event(s) verified." in out.getvalue()


def test_verify_audit_command_fails_naming_the_tampered_event(chain_of_five):
    with dba_cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'test.rewritten' WHERE sequence = 2")

    with pytest.raises(CommandError, match=r"BROKEN at event #2 "):
        call_command("verify_audit", stdout=StringIO())


def test_verify_api_reports_ok_count_and_first_bad(people, client_as):
    api = client_as(people["approver"])  # signing in records event #1
    audit.record("test.step")
    audit.record("test.step")

    body = api.get("/api/v1/audit/verify/").json()
    assert {k: body[k] for k in ("ok", "events", "first_bad")} == {"ok": True, "events": 3, "first_bad": None}

    with dba_cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET details = %s WHERE sequence = 2", ['{"n": 1}'])
    body = api.get("/api/v1/audit/verify/").json()
    assert {k: body[k] for k in ("ok", "events", "first_bad")} == {"ok": False, "events": 2, "first_bad": 2}


@pytest.mark.parametrize("persona", ["viewer", "scientist"])
def test_verify_api_is_refused_to_roles_without_the_audit(people, client_as, persona):
    response = client_as(people[persona]).get("/api/v1/audit/verify/")
    assert response.status_code == 403
    assert "detail" in response.json()


def test_staff_may_verify_before_any_project_exists(db, client_as):
    staff = make_user("root", staff=True)
    body = client_as(staff).get("/api/v1/audit/verify/").json()
    assert (body["ok"], body["events"]) == (True, 1)  # the staff sign-in


def test_audit_page_shows_a_broken_chain_to_staff_only(people, client_as, chain_of_five):
    with dba_cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 2")

    staff_page = client_as(people["staff"]).get("/audit/?verify=1").content.decode()
    assert "Chain BROKEN at event #3" in staff_page
    admin_page = client_as(people["admin"]).get("/audit/?verify=1").content.decode()
    assert "chain-status" not in admin_page
