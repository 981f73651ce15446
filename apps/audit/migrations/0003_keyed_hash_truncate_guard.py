"""Keyed hashes from now on, a seal over the older events, and on PostgreSQL a database that refuses the
rest of what the application's role could do to the trail.

hash_version: rows already written keep 1 (plain SHA-256, still verified); new rows get 2 (HMAC with the
audit key, see hashing.py). If the chain already has events, a keyed "audit.keyed_hashing_enabled" event
is appended naming how many unkeyed events precede it and the last one's hash, so nobody can later pass off
a rewritten chain as "old, unkeyed" events. Set PORTAL_AUDIT_KEY (or keep SECRET_KEY) before migrating:
the seal is signed with the key in force now.

PostgreSQL triggers (0002 already refuses UPDATE/DELETE of events):
- TRUNCATE of either table is refused (statement-level: row triggers never see a TRUNCATE). Superusers
  are let through: they can switch every trigger off anyway (session_replication_role), and Django's
  test-database flush runs as one.
- An event may only be INSERTed as the next link after the head; the head may only move one step, to the
  event just appended, and cannot be deleted or re-created over existing events.
Switching these off needs ALTER TABLE, i.e. the table owner: run the application as a role that does not
own the tables (migrations as the owner) and it cannot get around them.
"""

from datetime import UTC

from django.db import migrations, models
from django.utils import timezone

GENESIS_HASH = "0" * 64

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION audit_refuse_truncate() RETURNS trigger AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit records are append-only (TRUNCATE of % refused)', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_auditchainhead
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();

CREATE OR REPLACE FUNCTION audit_event_extends_head() RETURNS trigger AS $$
DECLARE
    head_sequence bigint;
    head_hash varchar;
BEGIN
    SELECT sequence, hash INTO head_sequence, head_hash FROM audit_auditchainhead WHERE id = 1;
    IF NOT FOUND THEN
        head_sequence := 0;
        head_hash := repeat('0', 64);
    END IF;
    IF NEW.sequence = head_sequence + 1 AND NEW.prev_hash = head_hash THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (INSERT of #% refused: not the next link after the head)',
        NEW.sequence;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_event_extends_head BEFORE INSERT ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_extends_head();

CREATE OR REPLACE FUNCTION audit_head_advances() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit chain head is append-only (DELETE refused)';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.id = 1 AND NEW.sequence = 0 AND NEW.hash = repeat('0', 64)
                AND NOT EXISTS (SELECT 1 FROM audit_auditevent) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit chain head is append-only (INSERT refused: the chain is not empty)';
    END IF;
    IF NEW.id = OLD.id AND NEW.sequence = OLD.sequence + 1 AND EXISTS (
            SELECT 1 FROM audit_auditevent e
            WHERE e.sequence = NEW.sequence AND e.hash = NEW.hash AND e.prev_hash = OLD.hash) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit chain head is append-only (UPDATE refused: it only moves to the event just appended)';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_head_advances BEFORE INSERT OR UPDATE OR DELETE ON audit_auditchainhead
    FOR EACH ROW EXECUTE FUNCTION audit_head_advances();
"""
DROP_SQL = """
DROP TRIGGER IF EXISTS audit_head_advances ON audit_auditchainhead;
DROP FUNCTION IF EXISTS audit_head_advances();
DROP TRIGGER IF EXISTS audit_event_extends_head ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_event_extends_head();
DROP TRIGGER IF EXISTS audit_head_no_truncate ON audit_auditchainhead;
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_refuse_truncate();
"""


def seal_unkeyed_events(apps, schema_editor):
    # The hashing code is imported, not copied: version 2 must be computed exactly as verification does.
    from apps.audit import hashing

    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    head, _ = AuditChainHead.objects.get_or_create(pk=1)
    legacy = AuditEvent.objects.count()
    if not legacy:
        return
    seal = AuditEvent(
        sequence=head.sequence + 1, created_at=timezone.now().astimezone(UTC), actor=None, actor_label="",
        action=hashing.SEAL_ACTION, object_type="", object_id="", object_repr="", project=None,
        details={"legacy_events": legacy, "legacy_head": head.hash}, client_ip=None,
        prev_hash=head.hash, hash_version=hashing.KEYED)
    seal.hash = hashing.compute(hashing.KEYED, hashing.event_payload(
        sequence=seal.sequence, created_at=seal.created_at, actor_id=None, actor_label="",
        action=seal.action, object_type="", object_id="", object_repr="", project_id=None,
        details=seal.details, client_ip=None, prev_hash=seal.prev_hash, hash_version=hashing.KEYED))
    seal.save()
    AuditChainHead.objects.filter(pk=1).update(sequence=seal.sequence, hash=seal.hash)


def add_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # params=None: with parameters the driver reads plpgsql's `%` as a placeholder.
        schema_editor.execute(TRIGGER_SQL, params=None)


def drop_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only")]

    operations = [
        # Existing rows are version 1; ADD COLUMN ... DEFAULT fires no UPDATE trigger.
        migrations.AddField(
            model_name="auditevent",
            name="hash_version",
            field=models.PositiveSmallIntegerField(default=1, editable=False),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash_version",
            field=models.PositiveSmallIntegerField(default=2, editable=False),
        ),
        migrations.RunPython(seal_unkeyed_events, migrations.RunPython.noop),
        migrations.RunPython(add_triggers, drop_triggers),
    ]
