"""Audit test helpers: raw SQL as a database owner would run it, and the chain as a list."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from apps.audit import services as audit
from apps.audit.models import AuditEvent

ON_POSTGRES = connection.vendor == "postgresql"
AUDIT_TABLES = ("audit_auditevent", "audit_auditchainhead")


@contextmanager
def dba_cursor() -> Iterator:
    """A cursor with the append-only trigger switched off, as a DBA (table owner) could do.

    On PostgreSQL triggers refuse UPDATE/DELETE/TRUNCATE of events, out-of-place INSERTs and head
    rewinds; tampering past them needs ALTER TABLE. SQLite has no triggers, so there the cursor is used
    as is.
    """
    with connection.cursor() as cursor:
        if ON_POSTGRES:
            # The test's transaction holds deferred foreign-key checks from its inserts; PostgreSQL
            # refuses ALTER TABLE while they are pending, so run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in AUDIT_TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            yield cursor
        finally:
            if ON_POSTGRES:
                for table in AUDIT_TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.fixture(autouse=True)
def checkpoint_file(settings, tmp_path):
    """Each test gets its own checkpoint file, so checkpoints never leak between tests or runs."""
    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "audit-checkpoints.jsonl")
    return tmp_path / "audit-checkpoints.jsonl"


@pytest.fixture
def chain_of_five(db) -> list[AuditEvent]:
    """Five events from the system (no actor), sequences 1..5 in a fresh test database."""
    events = [audit.record("test.step", details={"n": n}) for n in range(1, 6)]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    return events
