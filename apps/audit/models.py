"""The audit trail: an append-only, hash-chained log of every decision and change."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.audit import hashing

GENESIS_HASH = "0" * 64


class AuditEventQuerySet(models.QuerySet):
    def visible_to(self, user) -> AuditEventQuerySet:
        """Staff see every event; others their own and those of projects where they may view the audit."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        # The policy lives in accounts; audit's own pages are the documented exception to the
        # dependency order, and import it lazily so the model layer stays free of it.
        from apps.accounts.permissions import Action, projects_with_action

        return self.filter(Q(actor=user) | Q(project__in=projects_with_action(user, Action.VIEW_AUDIT)))


class AuditEvent(models.Model):
    """One thing that happened: who did what to which object, where from, chained to the event before.

    `hash` covers every field and the previous event's hash, so editing or deleting any row breaks the
    chain from that row on; it is keyed (HMAC) so a database superuser cannot recompute it after an edit,
    and checkpoints kept outside the database catch a cut-off tail (see services.verify_chain).
    """

    sequence = models.PositiveBigIntegerField(unique=True, editable=False)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(db_index=True, editable=False)
    # Users and projects are deactivated/archived, never deleted, once they have history.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True, db_index=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    object_repr = models.CharField(max_length=200, blank=True)
    project = models.ForeignKey(
        "accounts.Project", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    details = models.JSONField(default=dict, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # Which algorithm made `hash`: rows written before keyed hashing keep 1 (see hashing.py).
    hash_version = models.PositiveSmallIntegerField(default=hashing.CURRENT, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-sequence"]
        indexes = [models.Index(fields=["project", "-sequence"])]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_label or 'system'}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Audit events are append-only; they cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit events are append-only; they cannot be deleted.")

    def hash_payload(self) -> dict:
        return hashing.event_payload(
            sequence=self.sequence, created_at=self.created_at, actor_id=self.actor_id,
            actor_label=self.actor_label, action=self.action, object_type=self.object_type,
            object_id=self.object_id, object_repr=self.object_repr, project_id=self.project_id,
            details=self.details, client_ip=self.client_ip, prev_hash=self.prev_hash,
            hash_version=self.hash_version)

    def compute_hash(self) -> str:
        """SHA-256 (version 1, older events) or HMAC-SHA256 with the audit key (version 2); see hashing."""
        return hashing.compute(self.hash_version, self.hash_payload())

    def hash_is_valid(self) -> bool:
        """Whether `hash` matches, under the current audit key or a retired one (key rotation)."""
        return hashing.matches(self.hash_version, self.hash_payload(), self.hash)


class AuditChainHead(models.Model):
    """The single row every writer locks to append: it holds the last sequence and hash."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self) -> str:
        return f"audit head #{self.sequence}"
