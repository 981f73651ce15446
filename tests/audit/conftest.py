"""Audit test helpers: raw SQL as a database owner would run it, and the chain as a list."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from apps.audit import services as audit
from apps.audit.models import AuditEvent

ON_POSTGRES = connection.vendor == "postgresql"
TRIGGER = "audit_event_append_only"


@contextmanager
def dba_cursor() -> Iterator:
    """A cursor with the append-only trigger switched off, as a DBA (table owner) could do.

    On PostgreSQL the trigger refuses UPDATE/DELETE on audit rows; tampering past it needs ALTER TABLE.
    SQLite has no trigger, so there the cursor is used as is.
    """
    with connection.cursor() as cursor:
        if ON_POSTGRES:
            # The test's transaction holds deferred foreign-key checks from its inserts; PostgreSQL
            # refuses ALTER TABLE while they are pending, so run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"ALTER TABLE audit_auditevent DISABLE TRIGGER {TRIGGER}")
        try:
            yield cursor
        finally:
            if ON_POSTGRES:
                cursor.execute(f"ALTER TABLE audit_auditevent ENABLE TRIGGER {TRIGGER}")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.fixture
def chain_of_five(db) -> list[AuditEvent]:
    """Five events from the system (no actor), sequences 1..5 in a fresh test database."""
    events = [audit.record("test.step", details={"n": n}) for n in range(1, 6)]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    return events
