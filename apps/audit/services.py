"""Writing and checking the audit trail. record() is the only way events are written."""

from __future__ import annotations

import contextvars
import ipaddress
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, time

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from apps.audit import checkpoints, hashing
from apps.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from apps.core.exports import spreadsheet_safe  # the one rule for every CSV the portal writes

# Set per request by AuditContextMiddleware; None in tasks and commands.
client_ip_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("audit_client_ip", default=None)


def request_client_ip(request) -> str | None:
    if settings.USE_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.META.get("REMOTE_ADDR") or None


def _json_safe(details: dict | None) -> dict:
    # Round-trip now so the hash is computed over exactly what the database will give back.
    return _db_stable(json.loads(json.dumps(details or {}, default=str)))


def _db_stable(value):
    """Rewrite the JSON values PostgreSQL's jsonb would change or refuse, the same way on every database.

    jsonb returns 1e20 as the integer 100000000000000000000 and -0.0 as 0.0 (a hash over the original
    would then never verify), and refuses NaN/Infinity and NUL characters (the audited action would fail).
    """
    if isinstance(value, dict):
        return {_db_stable(k): _db_stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_db_stable(v) for v in value]
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1e16:  # Python writes these with an exponent; every such float is a whole number
            return int(value)
        return value + 0.0  # -0.0 becomes 0.0
    return value


def _canonical_ip(value: str | None) -> str | None:
    """The address as PostgreSQL's inet column gives it back, or None if it is not an address.

    It may come from an X-Forwarded-For header, which anyone can write.
    """
    try:
        address = ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.version == 6 and address.scope_id:
        return None
    if address.version == 6 and int(address) >> 32 == 0 and int(address) >> 16:
        # PostgreSQL writes the old IPv4-compatible form (::1.2.3.4) with a dotted tail.
        return f"::{ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)}"
    return str(address)


def record(action: str, *, actor=None, obj=None, project=None, details: dict | None = None,
           actor_label: str = "", client_ip: str | None = None) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    The head row is locked for the rest of that transaction, so concurrent writers queue up and the
    chain never forks; if the caller's transaction rolls back, so does the event.
    """
    if obj is not None and project is None:
        project = getattr(obj, "project", None)
        if project is None and obj._meta.label == "accounts.Project":
            project = obj
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        event = AuditEvent(
            sequence=head.sequence + 1,
            created_at=timezone.now().astimezone(UTC),
            actor=actor if actor is not None and actor.pk else None,
            # Cut to the column sizes: SQLite would store more, PostgreSQL would refuse the whole action.
            actor_label=_db_stable(actor_label or (actor.get_username() if actor is not None else ""))[:150],
            action=action,
            object_type=obj._meta.label_lower if obj is not None else "",
            object_id=str(_public_id(obj))[:64] if obj is not None else "",
            object_repr=_db_stable(str(obj))[:200] if obj is not None else "",
            project=project,
            details=_json_safe(details),
            client_ip=_canonical_ip(client_ip or client_ip_var.get()),
            prev_hash=head.hash,
            hash_version=hashing.CURRENT,
        )
        event.hash = event.compute_hash()
        event.save()
        AuditChainHead.objects.filter(pk=1).update(sequence=event.sequence, hash=event.hash)
    return event


def _public_id(obj):
    for attr in ("slug", "uuid", "username"):
        value = getattr(obj, attr, None)
        if value:
            return value
    return obj.pk


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    first_bad: int | None
    reason: str = ""
    # The last event read, for writing a checkpoint after a clean run (not part of the public report).
    last_sequence: int = 0
    last_hash: str = GENESIS_HASH

    def as_dict(self) -> dict:
        return {"ok": self.ok, "events": self.events, "first_bad": self.first_bad, "reason": self.reason}


def verify_chain() -> ChainReport:
    """Walk the chain in order; report the first event whose sequence, link, hash or checkpoint is wrong.

    What each check catches: a changed field fails the event's keyed hash (HMAC, so a database superuser
    cannot recompute it); a deleted, inserted or reordered event breaks the sequence or the link; events
    cut off the end are caught by the head row and, if the head was wound back too, by the signed
    checkpoints kept outside the database (see checkpoints.py). Events from before keyed hashing
    (hash_version 1) are accepted only as the start of the chain and only if a keyed seal follows them.
    """
    # The head is read before and after the walk: writers may append meanwhile (an event and the head
    # move in one transaction), so an intact chain has between those two counts of events.
    head_before = _head_sequence()
    anchors = checkpoints.read()
    expected_prev = GENESIS_HASH
    expected_sequence = 1
    count = 0
    legacy = 0  # unkeyed events at the start of the chain, awaiting their seal
    keyed_seen = False
    for event in AuditEvent.objects.order_by("sequence").iterator(chunk_size=2000):
        count += 1
        problem = _event_problem(event, expected_sequence, expected_prev, keyed_seen, anchors)
        if problem is None and event.hash_version == hashing.KEYED and not keyed_seen and legacy \
                and not _seals(event, legacy, expected_prev):
            problem = f"the {legacy} unkeyed event(s) before it are not sealed by a keyed event"
        if problem is not None:
            return ChainReport(False, count, event.sequence, problem, expected_sequence - 1, expected_prev)
        legacy += event.hash_version == hashing.PLAIN
        keyed_seen = keyed_seen or event.hash_version == hashing.KEYED
        expected_prev = event.hash
        expected_sequence += 1
    if legacy and not keyed_seen:
        return ChainReport(False, count, 1, f"all {legacy} event(s) have unkeyed hashes and no keyed seal")
    last = (count, expected_prev)
    if anchors and max(anchors) > count:
        return ChainReport(False, count, count + 1,
                           f"a signed checkpoint saw event #{max(anchors)} but the chain ends at #{count} "
                           "(events were removed from the end)", *last)
    if head_before is not None and count < head_before:
        return ChainReport(False, count, count + 1,
                           f"the chain head expects {head_before} events but {count} exist", *last)
    head_after = _head_sequence()
    if head_after is not None and count > head_after:
        return ChainReport(False, count, head_after + 1,
                           f"the chain head expects {head_after} events but {count} exist", *last)
    return ChainReport(True, count, None, "", *last)


def _event_problem(event, expected_sequence, expected_prev, keyed_seen, anchors) -> str | None:
    if event.sequence != expected_sequence:
        return f"event #{expected_sequence} is missing (next is #{event.sequence})"
    if event.prev_hash != expected_prev:
        return "link to the previous event is broken"
    if event.hash_version not in (hashing.PLAIN, hashing.KEYED):
        return f"unknown hash version {event.hash_version}"
    if event.hash_version == hashing.PLAIN and keyed_seen:
        return "event has an unkeyed hash but keyed hashing was already in use (forged or downgraded)"
    if not event.hash_is_valid():
        return "event content does not match its hash"
    if anchors.get(event.sequence, event.hash) != event.hash:
        return "event differs from the signed checkpoint taken of it"
    return None


def _seals(event: AuditEvent, legacy: int, legacy_head: str) -> bool:
    return event.action == hashing.SEAL_ACTION and event.details == {
        "legacy_events": legacy, "legacy_head": legacy_head}


def checkpoint(report: ChainReport) -> bool:
    """Write a signed checkpoint of a clean report's last event (see checkpoints.py)."""
    return report.ok and checkpoints.write(report.last_sequence, report.last_hash)


def _head_sequence() -> int | None:
    return AuditChainHead.objects.filter(pk=1).values_list("sequence", flat=True).first()


def filter_events(events, params) -> tuple:
    """Apply the audit page/API filters; returns (queryset, errors by field)."""
    errors: dict[str, list[str]] = {}
    if params.get("project"):
        events = events.filter(project__slug=params["project"])
    if params.get("actor"):
        events = events.filter(actor_label__iexact=params["actor"])
    if params.get("action"):
        events = events.filter(action__startswith=params["action"])
    if params.get("object"):
        value = params["object"]
        events = events.filter(object_id=value) if ":" not in value else events.filter(
            object_type=value.split(":", 1)[0], object_id=value.split(":", 1)[1])
    if params.get("object_type"):
        events = events.filter(object_type=params["object_type"])
    for field, lookup in (("since", "created_at__gte"), ("until", "created_at__lte")):
        raw = params.get(field)
        if not raw:
            continue
        # A plain date first: Python 3.11's parse_datetime also accepts "2026-01-31" (as midnight), which
        # would make "until" end where the day begins. Well-formed impossible values (02-30) raise.
        try:
            day = parse_date(raw)
            if day is not None:
                moment = datetime.combine(day, time.max if field == "until" else time.min, tzinfo=UTC)
            else:
                moment = parse_datetime(raw)
        except ValueError:
            moment = None
        if moment is None:
            errors[field] = ["Use a date (2026-01-31) or a date and time (2026-01-31T14:00:00Z)."]
            continue
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment, UTC)
        events = events.filter(**{lookup: moment})
    return events, errors


CSV_COLUMNS = ["sequence", "time", "actor", "action", "object_type", "object_id", "object", "project",
               "client_ip", "details", "hash"]


def csv_rows(events):
    yield CSV_COLUMNS
    for e in events.select_related("project").order_by("sequence").iterator(chunk_size=2000):
        yield [spreadsheet_safe(v) for v in (
            e.sequence, e.created_at.isoformat(), e.actor_label, e.action, e.object_type, e.object_id,
            e.object_repr, e.project.slug if e.project else "", e.client_ip or "",
            json.dumps(e.details, sort_keys=True), e.hash)]
