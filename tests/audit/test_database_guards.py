"""On PostgreSQL the application's own database role cannot change the audit trail (migrations 0002/0003).

The tests act as a role that is neither the tables' owner nor a superuser but holds every privilege on
them (the worst case of a generous GRANT), and try UPDATE, DELETE, TRUNCATE, out-of-place INSERTs, a head
rewind, and switching the triggers off. Each must fail and leave the chain exactly as it was.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.services import verify_chain
from tests.audit.conftest import AUDIT_TABLES, ON_POSTGRES

pytestmark = pytest.mark.skipif(
    not ON_POSTGRES, reason="the guards are PostgreSQL triggers; SQLite has no roles (CI runs this on PostgreSQL)")


@pytest.fixture
def app_role(chain_of_five):
    """A login-less role with full DML on the audit tables, created inside the test's transaction.

    Roles are cluster-wide, so the name is unique per test; the transaction's rollback removes it.
    """
    name = f"portal_app_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {name} NOSUPERUSER NOLOGIN")
        cursor.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        for table in AUDIT_TABLES:
            cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER ON {table} TO {name}")
        cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {name}")
    return name


def _snapshot() -> tuple:
    events = list(AuditEvent.objects.order_by("sequence").values_list("sequence", "action", "details", "hash"))
    head = AuditChainHead.objects.values_list("sequence", "hash").get(pk=1)
    return events, head


def _as_role_fails(role: str, statement: str, params=None, match: str | None = None) -> None:
    with connection.cursor() as cursor:
        # The test's own inserts leave deferred foreign-key checks pending; PostgreSQL would refuse a
        # TRUNCATE for that reason before our trigger got to say no.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with pytest.raises(DatabaseError, match=match), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {role}")
        cursor.execute(statement, params)


def _other_event(sequence: int) -> AuditEvent:
    return AuditEvent.objects.get(sequence=sequence)


@pytest.mark.parametrize("statement", [
    "UPDATE audit_auditevent SET action = 'test.rewritten' WHERE sequence = 3",
    "UPDATE audit_auditevent SET details = '{\"n\": 999}', hash = hash WHERE sequence = 5",
    "DELETE FROM audit_auditevent WHERE sequence = 3",
    "DELETE FROM audit_auditevent WHERE sequence = 5",
    "DELETE FROM audit_auditevent",
    "TRUNCATE audit_auditevent",
    "TRUNCATE audit_auditevent CASCADE",
    "TRUNCATE audit_auditevent, audit_auditchainhead",
    "TRUNCATE audit_auditchainhead",
], ids=["update-middle", "update-last", "delete-middle", "delete-last", "delete-all", "truncate",
        "truncate-cascade", "truncate-both", "truncate-head"])
def test_app_role_cannot_update_delete_or_truncate(app_role, statement):
    before = _snapshot()
    _as_role_fails(app_role, statement, match="append-only")
    assert _snapshot() == before
    assert verify_chain().ok


def test_app_role_cannot_rewind_delete_or_recreate_the_head(app_role):
    before = _snapshot()
    third = _other_event(3)
    _as_role_fails(app_role, "UPDATE audit_auditchainhead SET sequence = %s, hash = %s WHERE id = 1",
                   [3, third.hash], match="append-only")
    _as_role_fails(app_role, "UPDATE audit_auditchainhead SET sequence = 6, hash = %s WHERE id = 1",
                   ["f" * 64], match="append-only")
    _as_role_fails(app_role, "DELETE FROM audit_auditchainhead", match="append-only")
    _as_role_fails(app_role, "INSERT INTO audit_auditchainhead (id, sequence, hash) VALUES (2, 0, %s)",
                   ["0" * 64], match="append-only")
    assert _snapshot() == before


def _insert_sql(sequence: int, prev_hash: str) -> tuple[str, list]:
    return ("INSERT INTO audit_auditevent (sequence, uuid, created_at, actor_label, action, object_type, "
            "object_id, object_repr, details, prev_hash, hash, hash_version) "
            "VALUES (%s, %s, now(), '', 'test.forged', '', '', '', '{}', %s, %s, 2)",
            [sequence, str(uuid.uuid4()), prev_hash, uuid.uuid4().hex * 2])


def test_app_role_cannot_insert_an_event_anywhere_but_after_the_head(app_role):
    before = _snapshot()
    # In the middle (a sequence freed up cannot exist, so: a duplicate link), before the head, past it.
    for sequence, prev in [(3, _other_event(2).hash), (6, _other_event(4).hash), (7, _other_event(5).hash)]:
        _as_role_fails(app_role, *_insert_sql(sequence, prev), match="append-only")
    assert _snapshot() == before


def test_app_role_cannot_switch_the_guards_off(app_role):
    before = _snapshot()
    for table in AUDIT_TABLES:
        _as_role_fails(app_role, f"ALTER TABLE {table} DISABLE TRIGGER USER", match="must be owner")
    _as_role_fails(app_role, "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
                   match="must be owner")
    _as_role_fails(app_role, "DROP TRIGGER audit_event_no_truncate ON audit_auditevent", match="must be owner")
    _as_role_fails(app_role, "DROP FUNCTION audit_event_append_only() CASCADE", match="must be owner")
    # Replica mode skips ordinary triggers; only a superuser may set it.
    _as_role_fails(app_role, "SET session_replication_role = replica", match="permission denied")
    assert _snapshot() == before


def test_the_next_link_is_still_accepted_from_the_app_role(app_role):
    """The guards refuse tampering, not appending: record()'s own statements pass as the app role."""
    from apps.audit import services as audit

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL ROLE {app_role}")
        event = audit.record("test.step", details={"n": 6})
        cursor.execute("RESET ROLE")
    assert event.sequence == 6
    assert AuditChainHead.objects.get(pk=1).sequence == 6
    assert verify_chain().ok


def test_a_superuser_flush_still_empties_the_tables(chain_of_five):
    """Django's test-database flush runs TRUNCATE as a superuser; the guard lets that one through."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            pytest.skip("the test database role is not a superuser")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("TRUNCATE audit_auditevent, audit_auditchainhead")
    assert not AuditEvent.objects.exists()
