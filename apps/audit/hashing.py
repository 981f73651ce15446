"""How an audit event's hash is computed, per `hash_version`, and where the key comes from.

Version 1 (events written before keyed hashing) is a plain SHA-256 over the event's fields: anyone with
write access to the database could recompute it, so a forged tail or a fully rewritten chain verified.
Version 2 is an HMAC-SHA256 with a key the database does not hold (PORTAL_AUDIT_KEY from the environment,
else derived from SECRET_KEY), so a database superuser can still edit rows but can no longer make the edit
verify. Version-1 events stay verifiable: they may only form the start of the chain, and the first
version-2 event must seal them (SEAL_ACTION, naming how many there are and the last one's hash).

Kept free of models so migration 0003 can seal an existing chain with exactly this code.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from django.conf import settings

PLAIN = 1
KEYED = 2
CURRENT = KEYED
SEAL_ACTION = "audit.keyed_hashing_enabled"


def audit_key() -> bytes:
    """The chain key new events are written with: PORTAL_AUDIT_KEY, else one derived from SECRET_KEY.
    Set it before migration 0003; to rotate, move the old one to the fallbacks."""
    key = settings.PORTAL_AUDIT_KEY
    return key.encode() if key else _derived(settings.SECRET_KEY)


def verification_keys() -> list[bytes]:
    """The current key, then retired ones (PORTAL_AUDIT_KEY_FALLBACKS; with no PORTAL_AUDIT_KEY, keys derived
    from SECRET_KEY_FALLBACKS), so events written before a rotation still verify."""
    keys = [audit_key(), *(k.strip().encode() for k in settings.PORTAL_AUDIT_KEY_FALLBACKS)]
    if not settings.PORTAL_AUDIT_KEY:
        keys += [_derived(old) for old in getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return keys


def _derived(secret_key: str) -> bytes:
    # A derived key rather than SECRET_KEY itself, so an audit MAC never doubles as a Django signature.
    return hmac.new(secret_key.encode(), b"portal.audit.chain-key", hashlib.sha256).digest()


def canonical(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_payload(*, sequence, created_at, actor_id, actor_label, action, object_type, object_id,
                  object_repr, project_id, details, client_ip, prev_hash, hash_version) -> dict:
    payload = {
        "sequence": sequence,
        "created_at": created_at.isoformat(timespec="microseconds"),
        "actor_id": actor_id,
        "actor_label": actor_label,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "object_repr": object_repr,
        "project_id": project_id,
        "details": details,
        "client_ip": client_ip,
        "prev_hash": prev_hash,
    }
    if hash_version != PLAIN:  # version 1 hashes stay byte-for-byte what they were
        payload["hash_version"] = hash_version
    return payload


def compute(hash_version: int, payload: dict, key: bytes | None = None) -> str:
    if hash_version == PLAIN:
        return hashlib.sha256(canonical(payload)).hexdigest()
    if hash_version == KEYED:
        return hmac.new(key or audit_key(), canonical(payload), hashlib.sha256).hexdigest()
    raise ValueError(f"unknown audit hash version {hash_version!r}")


def matches(hash_version: int, payload: dict, expected: str) -> bool:
    """Whether `expected` is the payload's hash under the current or a retired key."""
    if hash_version == PLAIN:
        return hmac.compare_digest(compute(PLAIN, payload), expected)
    return any(hmac.compare_digest(compute(hash_version, payload, key), expected) for key in verification_keys())


def sign(payload: dict, key: bytes | None = None) -> str:
    """A MAC over any JSON payload with the chain key (used for the checkpoints kept outside the database)."""
    return hmac.new(key or audit_key(), canonical(payload), hashlib.sha256).hexdigest()


def signed_by_known_key(payload: dict, mac: str) -> bool:
    return any(hmac.compare_digest(sign(payload, key), mac) for key in verification_keys())
