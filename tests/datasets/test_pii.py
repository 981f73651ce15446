"""Personal data detection by column name and content."""

from __future__ import annotations

import pytest

from apps.datasets.pii import detect_column


@pytest.mark.parametrize(
    ("name", "values", "kind"),
    [
        ("email", ["ada@example.com", "bob.smith+news@mail.co.uk", "c_d@sub.example.org"], "email"),
        ("phone", ["+1-555-559-4821", "(020) 7946 0958", "+44 20 7946 0958", "+4915112345678"], "phone"),
        ("ssn", ["123-45-6789", "078-05-1120", "219-09-9999"], "ssn"),
        ("card_number", ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"], "credit_card"),
        ("ip", ["10.0.0.1", "192.168.1.254", "2001:db8::1", "fe80::1ff:fe23:4567:890a"], "ip_address"),
        ("date_of_birth", ["1980-05-01", "12/31/1975", "1990-01-01"], "date_of_birth"),
        ("zip", ["02134", "90210-1234", "10001"], "postal_code"),
        ("postcode", ["SW1A 1AA", "EC1A 1BB", "M1 1AE"], "postal_code"),
        ("address", ["221B Baker Street", "1600 Pennsylvania Avenue NW", "10 Downing St"], "address"),
        ("first_name", ["Ada", "Grace", "Jean-Luc", "Zoë"], "person_name"),
        ("surname", ["O'Neill", "McDonald", "Lovelace"], "person_name"),
    ],
)
def test_detects_each_kind_by_name_and_content(name, values, kind):
    found = detect_column(name, values)
    assert found == {"kind": kind, "share": 1.0, "confidence": "high", "by": "both"}


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["ada@example.com", "alan@example.org"], "email"),
        (["123-45-6789", "078-05-1120"], "ssn"),
        (["4111111111111111", "5500000000000004"], "credit_card"),
        (["10.1.2.3", "172.16.0.9"], "ip_address"),
        (["+33 1 23 45 67 89", "+1 (555) 010-9999"], "phone"),
        (["Ada Lovelace", "Mary Smith", "John Jones", "Linda Davis"], "person_name"),
    ],
)
def test_detects_content_without_a_telling_name(values, kind):
    found = detect_column("field_7", values)
    assert found["kind"] == kind and found["by"] == "content" and found["confidence"] == "high"


def test_share_and_confidence_follow_the_matching_values():
    values = ["ada@example.com"] * 7 + ["n/a", "unknown", "-"]
    assert detect_column("contact", values) == {"kind": "email", "share": 0.7, "confidence": "medium", "by": "content"}
    assert detect_column("email", values)["confidence"] == "high"
    assert detect_column("email", ["", None, "  "]) == {
        "kind": "email",
        "share": 0.0,
        "confidence": "low",
        "by": "name",
    }


def test_invalid_card_numbers_are_not_flagged():
    assert detect_column("code", ["4111 1111 1111 1112", "5500-0000-0000-0005", "1234567812345678"]) is None
    half = ["4111111111111111", "4111111111111112"] * 5
    assert detect_column("code", half)["share"] == 0.5


def test_invalid_social_security_numbers_are_not_flagged():
    assert detect_column("ref", ["000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567"]) is None


def test_ordinary_columns_are_not_flagged():
    assert detect_column("product_code", ["PRD-00012", "PRD-19999", "SKU-1234-XL"]) is None
    assert detect_column("city", ["New York", "London", "Los Angeles", "Paris"]) is None
    assert detect_column("tier", ["Gold", "Silver", "Bronze"]) is None
    assert detect_column("amount", ["12.50", "3", "1000"]) is None
    assert detect_column("created", ["2024-01-01", "2024-02-03"]) is None
    assert detect_column("name", ["Widget 3000", "Gadget Pro X2", "pump-07"]) is None
    assert detect_column("count", ["12345", "67890"]) is None  # five digits are a ZIP code only by name


def test_the_more_specific_kind_wins():
    # Social security numbers also look like phone numbers; IP addresses like dotted phone numbers.
    assert detect_column("x", ["123-45-6789", "078-05-1120"])["kind"] == "ssn"
    assert detect_column("x", ["10.237.85.120", "10.20.30.40"])["kind"] == "ip_address"
    assert detect_column("x", ["2024-01-01", "2023-12-31"]) is None  # dates are not phone numbers


def test_looks_at_a_bounded_sample():
    values = ["ada@example.com"] * 50_000
    assert detect_column("e", values)["share"] == 1.0
