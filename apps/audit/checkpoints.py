"""Checkpoints: the chain's head, signed and written outside the database, so a cut-off tail is noticed.

A keyed hash stops a database superuser from forging or rewriting events, but not from deleting the
newest ones and winding the head back: what remains is a genuine, shorter chain. After each successful
verification (the nightly task, `manage.py verify_audit --checkpoint`) the last event's sequence and hash
are appended to a file under the var dir (PORTAL_AUDIT_CHECKPOINT_FILE), each line signed with the audit
key; verification then requires every checkpointed event to still be there, unchanged. Lines carry the
database they describe, so a test or development database never trips over production's checkpoints.
For the best protection, ship the file off the host too (backups, log shipping): it is small and append-only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.audit import hashing

logger = logging.getLogger(__name__)


def checkpoint_file() -> Path:
    return Path(settings.PORTAL_AUDIT_CHECKPOINT_FILE)


def database_label() -> str:
    db = connection.settings_dict
    return f"{connection.vendor}:{db.get('HOST') or ''}:{db.get('PORT') or ''}:{db.get('NAME')}"


def read() -> dict[int, str]:
    """Sequence -> hash of every correctly signed checkpoint for this database."""
    path = checkpoint_file()
    if not path.exists():
        return {}
    label = database_label()
    anchors: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
            mac = entry.pop("mac")
        except (ValueError, KeyError, AttributeError):
            logger.warning("Audit checkpoint file %s line %s is unreadable; ignored", path, number)
            continue
        if not hashing.signed_by_known_key(entry, str(mac)):
            # Someone who can write the file cannot sign without the key: the line is not ours.
            logger.warning("Audit checkpoint file %s line %s has a bad signature; ignored", path, number)
            continue
        if entry.get("database") == label:
            anchors[int(entry["sequence"])] = str(entry["hash"])
    return anchors


def write(sequence: int, event_hash: str) -> bool:
    """Append a signed checkpoint of the event (sequence, hash); False if one at least as new exists."""
    if sequence <= 0 or any(seq >= sequence for seq in read()):
        return False
    entry = {"database": database_label(), "sequence": sequence, "hash": event_hash,
             "written_at": timezone.now().isoformat()}
    entry["mac"] = hashing.sign(entry)
    path = checkpoint_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return True
