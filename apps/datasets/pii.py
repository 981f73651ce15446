"""Detect personal data in a column, from its name and a sample of its values.

`detect_column` returns the most likely kind of personal data with the share of sampled values that look
like it and a confidence, or None. Content checks are Arrow (RE2) regular expressions over the whole
sample at once; only the few candidates that need arithmetic (Luhn, SSN ranges, IPv6) are checked in Python.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_VALUES = 5_000  # sampled values looked at per column
MIN_SHARE = 0.3  # fewer matching values than this is not evidence from content

#: Kind -> how the explore page and warnings name it.
KIND_LABELS = {
    "email": "e-mail addresses",
    "phone": "phone numbers",
    "ssn": "US social security numbers",
    "credit_card": "credit card numbers",
    "ip_address": "IP addresses",
    "date_of_birth": "dates of birth",
    "postal_code": "postal codes",
    "address": "postal addresses",
    "person_name": "person names",
}
# When several kinds match the same values, the more specific one wins (an SSN also looks like a phone number).
_PRIORITY = [
    "ssn",
    "credit_card",
    "email",
    "ip_address",
    "date_of_birth",
    "phone",
    "postal_code",
    "address",
    "person_name",
]

# Column names, normalised to lower_snake_case words.
_NAME_HINTS = {
    "email": re.compile(r"(^|_)e_?mails?(_|$)|(^|_)mail_?(address|addr)(_|$)"),
    "phone": re.compile(r"(^|_)(phone|telephone|tel|mobile|cell|cellphone|fax|msisdn)(_?(no|num|number))?(_|$)"),
    "ssn": re.compile(r"(^|_)(ssn|social_?security(_?(no|num|number))?|sin|tin)(_|$)"),
    "credit_card": re.compile(r"(^|_)(credit_?card|card_?(no|num|number)|cc_?(no|num|number)|pan|ccn)(_|$)"),
    "ip_address": re.compile(r"(^|_)(ip|ipv4|ipv6|ip_?addr(ess)?|remote_?addr|client_?ip)(_|$)"),
    "date_of_birth": re.compile(r"(^|_)(dob|birth_?(date|day)?|date_?of_?birth|birthday|born(_on)?)(_|$)"),
    "postal_code": re.compile(r"(^|_)(zip|zip_?code|postal_?code|postcode|post_?code|plz)(_|$)"),
    "address": re.compile(r"(^|_)(address|addr|street|street_?address|address_?line_?\d?|home_?address)(_|$)"),
    "person_name": re.compile(
        r"^(name|full_?name|first_?name|last_?name|given_?name|family_?name|middle_?name|sur_?name|fore_?name|"
        r"maiden_?name|nick_?name)$|(^|_)(first|last|given|family|middle|sur|fore|maiden|full)_?name(_|$)|"
        r"^(customer|client|patient|employee|person|contact|owner|holder|account_?holder|user|member|student|"
        r"applicant|beneficiary|driver|passenger)_?(full_?)?name$"
    ),
}

# Whole-value patterns (RE2 syntax), tried on stripped values.
_PATTERNS = {
    "email": r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$",
    "ssn": r"^\d{3}-\d{2}-\d{4}$",
    "credit_card": r"^\d(?:[ -]?\d){12,18}$",
    "ipv4": r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$",
    "ipv6": r"^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$",
    # Grouped digits with separators, or an international number; the digit count is checked separately.
    "phone": r"^(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]\d{1,8}){1,5}$|^\+\d{7,15}$",
    "phone_bare": r"^\+?\d{7,15}$",
    "ssn_bare": r"^\d{9}$",
    "zip_us": r"^\d{5}(?:-\d{4})?$",
    "zip_hinted": r"^\d{3,5}(?:-\d{4})?$",  # numbers lose leading zeros: 02134 is read as 2134
    "postcode": r"(?i)^(?:[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d)$",
    "date": r"^(?:\d{4}-\d{1,2}-\d{1,2}(?:[T ].*)?|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}/\d{1,2}/\d{1,2})$",
}

# Checked with Python's `re` on the few candidate values (RE2 takes milliseconds to compile Unicode classes).
_ADDRESS = re.compile(
    r"^\d{1,6}[A-Za-z]?,?\s+(?:[^\W\d_][\w'.-]*\s+){0,5}(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|"
    r"drive|dr|court|ct|way|place|pl|terrace|close|crescent|square|sq|parkway|pkwy|highway|hwy|strasse|straße|"
    r"str|rue|calle|via)\b|^(?:[^\W\d_][\w'.-]*\s+){0,4}(?:street|avenue|road|lane|drive|strasse|straße|str\.)\s*"
    r"\d{1,5}[A-Za-z]?\b",
    re.IGNORECASE,
)
_NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*\.?")

# Common given names, to tell "Ada Lovelace" from "New York" when the column name says nothing.
_FIRST_NAMES_TEXT = """
    james mary john patricia robert jennifer michael linda david elizabeth william barbara richard susan joseph
    jessica thomas sarah charles karen christopher lisa daniel nancy matthew betty anthony sandra mark margaret
    donald ashley steven kimberly paul emily andrew donna joshua michelle kenneth carol kevin amanda brian melissa
    george deborah timothy stephanie ronald rebecca edward sharon jason laura jeffrey cynthia ryan dorothy jacob
    amy gary kathleen nicholas angela eric shirley jonathan emma stephen brenda larry pamela justin nicole scott
    anna brandon samantha benjamin katherine samuel christine gregory debra alexander rachel patrick carolyn frank
    janet raymond maria jack olivia dennis heather jerry helen tyler catherine aaron diane jose julie adam victoria
    nathan joyce henry lauren zachary kelly douglas christina peter ruth kyle joan noah virginia ethan judith jeremy
    evelyn christian hannah walter andrea keith megan austin cheryl roger jacqueline terry madison sean teresa
    gerald abigail carl sophia dylan martha harold sara jordan gloria jesse janice bryan kathryn lawrence ann arthur
    isabella gabriel judy bruce charlotte logan julia billy grace joe amber alan alice juan jean elijah denise willie
    frances albert danielle wayne marilyn randy beverly mason diana vincent natalie liam brittany roy theresa bobby
    kayla caleb alexis bradley doris russell lori lucas tiffany ada alan hans peter klaus jürgen stefan thomas anna
    maria ursula monika petra sabine claudia andrea julia laura sophie marie lena lea emma mia hannah ben paul leon
    finn elias jonas luis felix lukas max noah louis jules hugo arthur gabriel raphael adam lucas léa chloé manon
    camille sarah inès jade louise zoé lina giulia francesca chiara sara alessandro lorenzo matteo leonardo andrea
    francesco luca marco giuseppe antonio carlos javier miguel pablo alejandro sofia lucia paula martina mohammed
    ahmed ali omar fatima aisha yusuf ibrahim wei li ming jing hiroshi yuki kenji sakura raj priya amit anil sunita
    olga ivan dmitri sergei natalia tatiana pierre jean michel philippe nathalie isabelle sylvie
"""
_FIRST_NAMES = frozenset(_FIRST_NAMES_TEXT.split())


_REDACT = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"  # e-mail addresses
    r"|(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"  # US social security numbers
    r"|(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"  # card numbers
)


def redact_text(text: str) -> str:
    """`text` with e-mail addresses, SSNs and card numbers replaced by "[hidden]": for messages that quote a
    line of a file (a reader's error), which every member of the project sees, viewers included."""
    return _REDACT.sub("[hidden]", text)


def detect_column(name: str, values: Sequence[str]) -> dict | None:
    """{"kind", "share", "confidence": "high|medium|low", "by": "name|content|both"} or None.

    `values` are sampled cell values as text (missing values may be None or empty; at most MAX_VALUES are
    looked at). `share` is the fraction of the non-empty values that look like the kind.
    """
    return detect_array(name, pa.array([v for v in values[: MAX_VALUES * 2] if v], pa.string()))


def detect_array(name: str, values: pa.Array) -> dict | None:
    """`detect_column` for values already in an Arrow string array (nulls are skipped)."""
    hinted = hinted_kinds(name)
    arr = pc.utf8_trim_whitespace(values.drop_null())
    arr = arr.filter(pc.not_equal(pc.utf8_length(arr), 0))[:MAX_VALUES]
    shares = _content_shares(arr, hinted) if len(arr) else {}

    best = None
    for kind in _PRIORITY:
        share = shares.get(kind, 0.0)
        if share >= MIN_SHARE and (best is None or share > best[1] + 0.05):
            best = (kind, share)
    for kind in _PRIORITY:  # the column name decides between kinds that match equally well
        if kind in hinted and shares.get(kind, 0.0) >= MIN_SHARE and (best is None or shares[kind] >= best[1] - 0.05):
            return _finding(kind, shares[kind], by_name=True)
    if best is not None:
        return _finding(best[0], best[1], by_name=best[0] in hinted)
    if hinted:
        kind = next(k for k in _PRIORITY if k in hinted)
        if kind == "person_name" and len(arr) and shares.get("words", 0.0) < 0.5:
            return None  # "name" of products, files or hosts: the values are not words
        return {"kind": kind, "share": round(shares.get(kind, 0.0), 4), "confidence": "low", "by": "name"}
    return None


def _finding(kind: str, share: float, *, by_name: bool) -> dict:
    if by_name:
        confidence = "high" if share >= 0.5 else "medium"
    else:
        confidence = "high" if share >= 0.9 else "medium" if share >= 0.6 else "low"
    return {"kind": kind, "share": round(share, 4), "confidence": confidence, "by": "both" if by_name else "content"}


def hinted_kinds(name: str) -> set[str]:
    """The kinds of personal data the column's name suggests ("zip_code" -> {"postal_code"})."""
    words = re.sub(r"([a-z])([A-Z])", r"\1_\2", name.strip())
    normalised = re.sub(r"[^0-9a-z]+", "_", words.lower()).strip("_")
    return {kind for kind, pattern in _NAME_HINTS.items() if pattern.search(normalised)}


def _matches(arr: pa.Array, pattern: str) -> np.ndarray:
    return _bools(pc.match_substring_regex(arr, pattern))


def _mask(values: np.ndarray) -> pa.BooleanArray:
    """NumPy booleans as an Arrow filter (pa.array() would import pandas)."""
    bits = np.packbits(values, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _bools(arr: pa.Array) -> np.ndarray:
    """A null-free boolean array as NumPy (Array.to_numpy() would import pandas)."""
    bits = np.frombuffer(arr.buffers()[1], np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(bool)


def _content_shares(arr: pa.Array, hinted: set[str]) -> dict[str, float]:
    n = len(arr)
    counted = pc.count_substring_regex(arr, r"\d")
    digits = np.frombuffer(counted.buffers()[1], np.int32, len(counted), counted.offset * 4)
    shares: dict[str, float] = {}

    at = _bools(pc.match_substring(arr, "@"))
    shares["email"] = _matches(arr.filter(_mask(at)), _PATTERNS["email"]).sum() / n if at.any() else 0.0
    if not (digits > 0).any():
        shares.update(ssn=0.0, credit_card=0.0, ip_address=0.0, phone=0.0, date_of_birth=0.0, postal_code=0.0)
        shares["address"] = 0.0
        return _name_shares(arr, digits, hinted, shares)

    ssn_shaped = ssn = _matches(arr, _PATTERNS["ssn"])
    if "ssn" in hinted:
        ssn = ssn | _matches(arr, _PATTERNS["ssn_bare"])
    shares["ssn"] = _count_python(arr, ssn, _valid_ssn) / n

    cards = _matches(arr, _PATTERNS["credit_card"])
    shares["credit_card"] = _count_python(arr, cards, _luhn_ok) / n

    ip = _matches(arr, _PATTERNS["ipv4"])
    v6 = _matches(arr, _PATTERNS["ipv6"]) & ~ip
    shares["ip_address"] = (ip.sum() + _count_python(arr, v6, _valid_ipv6)) / n

    dates = _matches(arr, _PATTERNS["date"])
    phone = _matches(arr, _PATTERNS["phone"])
    if "phone" in hinted:
        phone |= _matches(arr, _PATTERNS["phone_bare"])
    phone &= (digits >= 7) & (digits <= 15) & ~dates & ~ssn_shaped  # 123-45-6789 is never a phone number
    shares["phone"] = phone.mean()

    if "date_of_birth" in hinted:
        shares["date_of_birth"] = _count_python(arr, dates, _plausible_birth_date) / n

    postal = _matches(arr, _PATTERNS["postcode"])
    if "postal_code" in hinted or "address" in hinted:
        postal |= _matches(arr, _PATTERNS["zip_us"] if "address" in hinted else _PATTERNS["zip_hinted"])
    shares["postal_code"] = postal.mean()
    shares["address"] = _count_python(arr, digits > 0, lambda v: bool(_ADDRESS.search(v))) / n
    return _name_shares(arr, digits, hinted, shares)


def _name_shares(arr: pa.Array, digits: np.ndarray, hinted: set[str], shares: dict) -> dict[str, float]:
    n = len(arr)
    no_digits = digits == 0
    names = [v for v in arr.filter(_mask(no_digits)).to_pylist() if _looks_like_name(v)] if no_digits.any() else []
    if "person_name" in hinted:
        shares["person_name"] = len(names) / n
        shares["words"] = _count_python(arr, no_digits, lambda v: bool(re.fullmatch(r"[^\W\d_][\w '’.-]*", v))) / n
    else:
        # Without the column name, ask for first name + surname with a common first name: "New York" is not one.
        two_words = [v for v in names if " " in v]
        known = sum(1 for v in two_words if v.split()[0].lower() in _FIRST_NAMES)
        shares["person_name"] = known / n if known >= 0.5 * max(len(two_words), 1) else 0.0
    return {k: float(v) for k, v in shares.items()}


def _looks_like_name(value: str) -> bool:
    """One to three capitalised words: "Ada", "Ada Lovelace", "Jean-Luc O'Neill", "Mary McDonald", "J. Smith"."""
    words = value.split()
    return 0 < len(words) <= 3 and all(
        w[0].isupper() and (any(c.islower() for c in w) or (len(w) == 2 and w[1] == ".")) and _NAME_WORD.fullmatch(w)
        for w in words
    )


def _count_python(arr: pa.Array, mask: np.ndarray, check) -> int:
    if not mask.any():
        return 0
    return sum(1 for v in arr.filter(_mask(mask)).to_pylist() if check(v))


def _luhn_ok(value: str) -> bool:
    digits = [int(c) for c in value if c.isdigit()]
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _valid_ssn(value: str) -> bool:
    digits = value.replace("-", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _valid_ipv6(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).version == 6
    except ValueError:
        return False


def _plausible_birth_date(value: str) -> bool:
    years = [int(y) for y in re.findall(r"\d{4}", value)] or [int(y) for y in re.findall(r"\d{2}$", value)]
    return bool(years) and all(y < 100 or 1900 <= y <= 2030 for y in years)
