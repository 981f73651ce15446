"""record() hashes exactly what the database gives back, so awkward values never raise a false alarm.

PostgreSQL stores details as jsonb and client IPs as inet, and both rewrite some values (1e20 comes
back as an integer, -0.0 as 0.0, "::FFFF:10.0.0.1" as a different spelling); jsonb refuses NaN and NUL
characters outright. Whatever a service puts in an event must be stored and still verify, on both
databases.
"""

from __future__ import annotations

import math

import pytest

from apps.audit import services as audit
from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain


@pytest.mark.parametrize("value", [
    1e20, -1.5e300, 123456789012345678.0, -0.0, 0.1, 1e-7, 2**70, 1.0, "a\x00b", "\u00e9t\u00e9 \u2713",
    [1, "two", None, True], {"nested": {"z": 1, "a": [1e17]}},
], ids=["1e20", "-1.5e300", "big-float", "negative-zero", "0.1", "1e-7", "2**70", "1.0", "nul-char",
        "unicode", "list", "nested"])
def test_details_values_survive_the_database_and_the_chain_verifies(db, value):
    event = audit.record("test.values", details={"value": value, "after": "ok"})

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.details == event.details
    assert stored.compute_hash() == stored.hash
    assert verify_chain().ok


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_numbers_are_recorded_as_text_instead_of_failing_the_action(db, value):
    # A metric that came out NaN must not make the whole audited action fail on PostgreSQL.
    event = audit.record("test.values", details={"value": value})

    assert AuditEvent.objects.get(pk=event.pk).details == {"value": str(value)}
    assert verify_chain().ok


def test_details_keys_that_are_not_strings_are_stored_as_strings(db):
    event = audit.record("test.values", details={1: "one", "2": "two"})
    assert AuditEvent.objects.get(pk=event.pk).details == {"1": "one", "2": "two"}
    assert verify_chain().ok


@pytest.mark.parametrize(("given", "stored"), [
    ("203.0.113.5", "203.0.113.5"),
    ("2001:DB8::1", "2001:db8::1"),
    ("2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    (" 192.0.2.9 ", "192.0.2.9"),
    ("unknown", None),
    ("", None),
], ids=["ipv4", "ipv6-upper", "ipv6-long", "ipv4-mapped", "spaces", "garbage", "empty"])
def test_client_ip_is_stored_in_one_canonical_spelling(db, given, stored):
    # With USE_X_FORWARDED_FOR the address comes from a header anybody can write.
    event = audit.record("test.ip", client_ip=given)

    assert event.client_ip == stored
    assert AuditEvent.objects.get(pk=event.pk).client_ip == stored
    assert verify_chain().ok


def test_a_garbage_forwarded_for_header_does_not_break_login(db, client, settings):
    from tests.conftest import PASSWORD, make_user

    settings.USE_X_FORWARDED_FOR = True
    make_user("someone")
    response = client.post("/accounts/login/", {"username": "someone", "password": PASSWORD},
                           HTTP_X_FORWARDED_FOR="unknown, 10.0.0.1")

    assert response.status_code == 302
    assert AuditEvent.objects.get(action="auth.login").client_ip is None
    assert verify_chain().ok


def test_long_labels_are_cut_to_their_column_size(db):
    event = audit.record("test.long", actor_label="x" * 400)
    assert len(AuditEvent.objects.get(pk=event.pk).actor_label) == 150
    assert verify_chain().ok
