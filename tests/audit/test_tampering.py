"""A database superuser tampers with the trail; verification names the first event that is wrong.

Each pattern is done the way such a person would: triggers switched off (dba_cursor), raw SQL, rows
rewritten wholesale. The forger knows the hashing scheme but not the audit key, so "correctly
recomputed" hashes use a key of their own, or the old unkeyed SHA-256. The last tests give the forger the
key as well: then only the signed checkpoint outside the database gives the rewrite away.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.audit import hashing
from apps.audit import services as audit
from apps.audit.models import GENESIS_HASH, AuditEvent
from apps.audit.services import verify_chain
from tests.audit.conftest import dba_cursor
from tests.conftest import make_user

FORGER_KEY = b"the forger's own guess at the key"


@pytest.fixture
def chain(db) -> list[AuditEvent]:
    """Six events by alice, sequences 1..6."""
    alice = make_user("alice")
    make_user("mallory")
    events = [audit.record("approval.decide", actor=alice, details={"n": n, "decision": "approve"})
              for n in range(1, 7)]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    return list(AuditEvent.objects.order_by("sequence"))


def _forged_hash(event: AuditEvent, *, key: bytes | None = FORGER_KEY, version: int = hashing.KEYED) -> str:
    payload = hashing.event_payload(
        sequence=event.sequence, created_at=event.created_at, actor_id=event.actor_id,
        actor_label=event.actor_label, action=event.action, object_type=event.object_type,
        object_id=event.object_id, object_repr=event.object_repr, project_id=event.project_id,
        details=event.details, client_ip=event.client_ip, prev_hash=event.prev_hash, hash_version=version)
    if version == hashing.PLAIN:
        return hashlib.sha256(hashing.canonical(payload)).hexdigest()
    return hmac.new(key or hashing.audit_key(), hashing.canonical(payload), hashlib.sha256).hexdigest()


def _rewrite(events: list[AuditEvent], *, key: bytes | None = FORGER_KEY, version: int = hashing.KEYED,
             relink: bool = True) -> None:
    """Replace the whole table with `events`, renumbered, relinked and rehashed, and move the head to match."""
    previous = GENESIS_HASH
    for number, event in enumerate(events, start=1):
        if relink:
            event.sequence, event.prev_hash = number, previous
        event.hash_version = version
        event.hash = _forged_hash(event, key=key, version=version)
        previous = event.hash
    with dba_cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent")
        AuditEvent.objects.bulk_create(events)
        cursor.execute("UPDATE audit_auditchainhead SET sequence = %s, hash = %s WHERE id = 1",
                       [events[-1].sequence if events else 0, previous])


def _sql(statement: str, params=None) -> None:
    with dba_cursor() as cursor:
        cursor.execute(statement, params)


def _set_head(sequence: int, head_hash: str) -> None:
    _sql("UPDATE audit_auditchainhead SET sequence = %s, hash = %s WHERE id = 1", [sequence, head_hash])


# Each pattern: (tamper(chain), first bad event, words from the reason).


def change_detail(chain):
    _sql("UPDATE audit_auditevent SET details = %s WHERE sequence = 3", [json.dumps({"n": 3, "decision": "reject"})])


def change_actor(chain):
    mallory = make_user("mallory2")
    _sql("UPDATE audit_auditevent SET actor_id = %s, actor_label = 'mallory2' WHERE sequence = 2", [mallory.pk])


def change_timestamp(chain):
    _sql("UPDATE audit_auditevent SET created_at = %s WHERE sequence = 4",
         [chain[3].created_at - timedelta(days=3)])


def change_action(chain):
    _sql("UPDATE audit_auditevent SET action = 'approval.withdraw' WHERE sequence = 5")


def change_detail_and_rehash_it(chain):
    event = chain[2]
    event.details = {"n": 3, "decision": "reject"}
    _sql("UPDATE audit_auditevent SET details = %s, hash = %s WHERE sequence = 3",
         [json.dumps(event.details), _forged_hash(event)])


def delete_middle(chain):
    _sql("DELETE FROM audit_auditevent WHERE sequence = 3")


def delete_middle_and_renumber(chain):
    with dba_cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 3")
        for sequence in (4, 5, 6):
            cursor.execute("UPDATE audit_auditevent SET sequence = sequence - 1 WHERE sequence = %s", [sequence])
    _set_head(5, chain[5].hash)


def delete_tail(chain):
    _sql("DELETE FROM audit_auditevent WHERE sequence >= 5")


def delete_tail_and_rewind_head(chain):
    audit.checkpoint(verify_chain())  # last night's verification anchored event #6
    _sql("DELETE FROM audit_auditevent WHERE sequence >= 5")
    _set_head(4, chain[3].hash)


def delete_everything_and_reset_head(chain):
    audit.checkpoint(verify_chain())
    _sql("DELETE FROM audit_auditevent")
    _set_head(0, GENESIS_HASH)


def swap_two_events(chain):
    with dba_cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET sequence = 1000 WHERE sequence = 2")
        cursor.execute("UPDATE audit_auditevent SET sequence = 2 WHERE sequence = 3")
        cursor.execute("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = 1000")


def swap_two_events_and_relink(chain):
    chain[1], chain[2] = chain[2], chain[1]
    _rewrite(chain)


def insert_forged_in_the_middle(chain):
    forged = AuditEvent(sequence=4, created_at=chain[2].created_at, actor=chain[0].actor, actor_label="alice",
                        action="approval.decide", details={"n": 99, "decision": "approve"},
                        prev_hash=chain[2].hash, hash_version=hashing.KEYED)
    forged.hash = _forged_hash(forged)
    with dba_cursor() as cursor:
        for sequence in (6, 5, 4):
            cursor.execute("UPDATE audit_auditevent SET sequence = sequence + 1 WHERE sequence = %s", [sequence])
        AuditEvent.objects.bulk_create([forged])


def append_forged_keyed(chain):
    forged = AuditEvent(sequence=7, created_at=chain[-1].created_at, actor_label="alice",
                        action="deployment.promote", details={}, prev_hash=chain[-1].hash,
                        hash_version=hashing.KEYED)
    forged.hash = _forged_hash(forged)
    with dba_cursor():
        AuditEvent.objects.bulk_create([forged])
    _set_head(7, forged.hash)


def append_forged_unkeyed(chain):
    forged = AuditEvent(sequence=7, created_at=chain[-1].created_at, actor_label="alice",
                        action="deployment.promote", details={}, prev_hash=chain[-1].hash,
                        hash_version=hashing.PLAIN)
    forged.hash = _forged_hash(forged, version=hashing.PLAIN)
    with dba_cursor():
        AuditEvent.objects.bulk_create([forged])
    _set_head(7, forged.hash)


def append_without_moving_head(chain):
    forged = AuditEvent(sequence=7, created_at=chain[-1].created_at, action="deployment.promote",
                        prev_hash=chain[-1].hash)
    forged.hash = forged.compute_hash()  # even with the real key
    with dba_cursor():
        AuditEvent.objects.bulk_create([forged])


def rewrite_whole_chain(chain):
    chain[3].details = {"n": 4, "decision": "reject"}
    _rewrite(chain)


def rewrite_whole_chain_as_unkeyed_legacy(chain):
    chain[3].details = {"n": 4, "decision": "reject"}
    _rewrite(chain, version=hashing.PLAIN)


def downgrade_one_event(chain):
    # The forger cannot compute a keyed hash, so they mark the edited row as an old, unkeyed one.
    event = chain[3]
    event.details = {"n": 4, "decision": "reject"}
    event.hash_version = hashing.PLAIN
    _sql("UPDATE audit_auditevent SET details = %s, hash_version = 1, hash = %s WHERE sequence = 4",
         [json.dumps(event.details), _forged_hash(event, version=hashing.PLAIN)])


def rewind_head(chain):
    _set_head(3, chain[2].hash)


def unknown_hash_version(chain):
    _sql("UPDATE audit_auditevent SET hash_version = 9 WHERE sequence = 2")


PATTERNS = [
    (change_detail, 3, "does not match its hash"),
    (change_actor, 2, "does not match its hash"),
    (change_timestamp, 4, "does not match its hash"),
    (change_action, 5, "does not match its hash"),
    (change_detail_and_rehash_it, 3, "does not match its hash"),
    (delete_middle, 4, "#3 is missing"),
    (delete_middle_and_renumber, 3, "link to the previous event is broken"),
    (delete_tail, 5, "head expects 6 events but 4 exist"),
    (delete_tail_and_rewind_head, 5, "checkpoint saw event #6"),
    (delete_everything_and_reset_head, 1, "checkpoint saw event #6"),
    (swap_two_events, 2, "link to the previous event is broken"),
    (swap_two_events_and_relink, 1, "does not match its hash"),
    (insert_forged_in_the_middle, 4, "does not match its hash"),
    (append_forged_keyed, 7, "does not match its hash"),
    (append_forged_unkeyed, 7, "unkeyed hash but keyed hashing was already in use"),
    (append_without_moving_head, 7, "head expects 6 events but 7 exist"),
    (rewrite_whole_chain, 1, "does not match its hash"),
    (rewrite_whole_chain_as_unkeyed_legacy, 1, "unkeyed hashes and no keyed seal"),
    (downgrade_one_event, 4, "unkeyed hash but keyed hashing was already in use"),
    (rewind_head, 4, "head expects 3 events but 6 exist"),
    (unknown_hash_version, 2, "unknown hash version"),
]


@pytest.mark.parametrize(("tamper", "first_bad", "reason"), PATTERNS, ids=[p[0].__name__ for p in PATTERNS])
def test_tampering_is_detected_naming_the_first_bad_event(chain, tamper, first_bad, reason):
    assert verify_chain().ok
    tamper(chain)

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, first_bad), report
    assert reason in report.reason
    with pytest.raises(CommandError, match=rf"BROKEN at event #{first_bad} "):
        call_command("verify_audit", stdout=StringIO())


# --- A forger who has the key too: only the checkpoint outside the database catches them ----------


def test_a_rewrite_with_the_real_key_passes_the_hashes_but_not_the_checkpoint(chain):
    audit.checkpoint(verify_chain())
    chain[3].details = {"n": 4, "decision": "reject"}
    _rewrite(chain, key=hashing.audit_key())  # edit #4, everything after it rehashed with the key

    # The checkpoint vouches for #6 and everything it links back to: the break shows at #6, which is as
    # close as a checkpoint can point (more frequent checkpoints narrow it down).
    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 6)
    assert "differs from the signed checkpoint" in report.reason


def test_a_shortened_rewrite_with_the_real_key_is_caught_by_the_checkpoint(chain):
    audit.checkpoint(verify_chain())
    _rewrite(chain[:4], key=hashing.audit_key())

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 5)
    assert "checkpoint saw event #6 but the chain ends at #4" in report.reason


def test_without_a_checkpoint_a_key_holder_could_rewrite_the_chain(chain):
    """Why checkpoints exist: this is the one rewrite the hashes alone cannot catch."""
    chain[3].details = {"n": 4, "decision": "reject"}
    _rewrite(chain, key=hashing.audit_key())
    assert verify_chain().ok


# --- Checkpoints -----------------------------------------------------------------------------------


def test_verify_command_writes_a_checkpoint_only_when_asked_and_only_forward(chain, checkpoint_file):
    call_command("verify_audit", stdout=StringIO())
    assert not checkpoint_file.exists()

    out = StringIO()
    call_command("verify_audit", "--checkpoint", stdout=out)
    assert "Checkpoint written at event #6." in out.getvalue()
    call_command("verify_audit", "--checkpoint", stdout=StringIO())
    [line] = checkpoint_file.read_text().splitlines()
    assert (json.loads(line)["sequence"], json.loads(line)["hash"]) == (6, chain[-1].hash)


def test_a_broken_chain_is_never_checkpointed(chain, checkpoint_file):
    change_detail(chain)
    assert audit.checkpoint(verify_chain()) is False
    assert not checkpoint_file.exists()


def test_a_checkpoint_line_without_a_valid_signature_is_ignored(chain, checkpoint_file):
    audit.checkpoint(verify_chain())
    entry = json.loads(checkpoint_file.read_text())
    entry["sequence"] = 99  # whoever can write the file cannot sign without the key
    checkpoint_file.write_text(json.dumps(entry) + "\n")
    assert verify_chain().ok


def test_checkpoints_of_another_database_do_not_apply(chain, checkpoint_file, monkeypatch):
    from apps.audit import checkpoints

    monkeypatch.setattr(checkpoints, "database_label", lambda: "postgresql:db.example:5432:other")
    checkpoints.write(99, "f" * 64)
    monkeypatch.undo()
    assert verify_chain().ok


def test_nightly_task_checkpoints_a_clean_chain(chain, checkpoint_file):
    from apps.audit.tasks import verify_audit_chain_task

    assert verify_audit_chain_task()["ok"]
    assert json.loads(checkpoint_file.read_text())["sequence"] == 6


# --- Events written before keyed hashing ------------------------------------------------------------


def _seal_with_migration() -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module("apps.audit.migrations.0003_keyed_hash_truncate_guard")
    migration.seal_unkeyed_events(apps, None)  # the current models have the migration's fields


def test_unkeyed_events_sealed_by_the_migration_still_verify(chain):
    _rewrite(chain, version=hashing.PLAIN)  # the trail as it was before keyed hashing
    _seal_with_migration()
    audit.record("approval.decide", details={"n": 8})

    events = list(AuditEvent.objects.order_by("sequence"))
    assert [e.hash_version for e in events] == [1] * 6 + [2, 2]
    assert events[6].action == hashing.SEAL_ACTION
    assert events[6].details == {"legacy_events": 6, "legacy_head": events[5].hash}
    assert verify_chain().ok


def test_a_seal_that_miscounts_the_unkeyed_events_is_refused(chain):
    _rewrite(chain, version=hashing.PLAIN)
    _seal_with_migration()
    with dba_cursor() as cursor:  # the forger hides the last unkeyed event from the seal's count
        cursor.execute("DELETE FROM audit_auditevent WHERE sequence = 7")
    seal = AuditEvent(sequence=7, created_at=chain[-1].created_at, action=hashing.SEAL_ACTION,
                      details={"legacy_events": 5, "legacy_head": chain[4].hash}, prev_hash=chain[5].hash,
                      hash_version=hashing.KEYED)
    seal.hash = seal.compute_hash()  # even signed with the real key
    with dba_cursor():
        AuditEvent.objects.bulk_create([seal])

    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 7)
    assert "not sealed" in report.reason


def test_the_migration_writes_no_seal_on_an_empty_trail(db):
    _seal_with_migration()
    assert not AuditEvent.objects.exists()


# --- Key rotation -------------------------------------------------------------------------------------


def test_a_rotated_key_keeps_older_events_verifiable_through_the_fallbacks(db, settings, checkpoint_file):
    settings.PORTAL_AUDIT_KEY = "the first key"
    audit.record("test.step", details={"n": 1})
    audit.checkpoint(verify_chain())

    settings.PORTAL_AUDIT_KEY = "the second key"
    settings.PORTAL_AUDIT_KEY_FALLBACKS = ["the first key"]
    audit.record("test.step", details={"n": 2})
    assert verify_chain().ok, "events and checkpoints signed with the retired key still verify"

    settings.PORTAL_AUDIT_KEY_FALLBACKS = []
    report = verify_chain()
    assert (report.ok, report.first_bad) == (False, 1)
    assert "does not match its hash" in report.reason


def test_a_secret_key_rotation_keeps_the_derived_audit_key_through_secret_key_fallbacks(db, settings):
    """Without PORTAL_AUDIT_KEY the chain key is derived from SECRET_KEY: rotating that key the Django way
    (the old one in SECRET_KEY_FALLBACKS) must not make the trail look tampered with."""
    settings.PORTAL_AUDIT_KEY = ""
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the old secret key " * 3, []
    audit.record("test.step", details={"n": 1})

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the new secret key " * 3, ["the old secret key " * 3]
    audit.record("test.step", details={"n": 2})
    assert verify_chain().ok

    settings.SECRET_KEY_FALLBACKS = []
    assert not verify_chain().ok, "dropping the old key while it still signs events breaks verification"
