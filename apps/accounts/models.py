"""Who is who: users, projects, project memberships with a role, and API tokens."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


class User(AbstractUser):
    """A person who signs in. Deactivated (is_active=False), never deleted, once they have history."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    def __str__(self) -> str:
        return self.get_full_name() or self.username


class ProjectQuerySet(models.QuerySet):
    def visible_to(self, user) -> ProjectQuerySet:
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(memberships__user=user)


slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1–50 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
)


class Project(models.Model):
    """A workspace: its members, data, models and deployments are seen only by its members."""

    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in one project; the role decides what they may do there (see permissions.py)."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        SCIENTIST = "scientist", "Scientist"
        APPROVER = "approver", "Approver"
        ADMIN = "admin", "Admin"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # public id (audit, API)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    class Source(models.TextChoices):
        MANUAL = "manual", "Added by hand"
        SSO = "sso", "Granted by a single sign-on group"

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    # SSO revokes only what SSO granted: a membership added by hand survives its group disappearing.
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project__name", "user__username"]
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user.username} in {self.project.slug} as {self.role}"


class GroupMapping(models.Model):
    """An identity-provider group that gives its members a role in a project, applied at each SSO login."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # public id (URLs, API)
    group = models.CharField(max_length=200, help_text="The group's name exactly as the identity provider sends it.")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="group_mappings")
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["group", "project__name"]
        constraints = [models.UniqueConstraint(fields=["group", "project"], name="unique_group_mapping")]

    def __str__(self) -> str:
        return f"{self.group} → {self.project.slug} as {self.role}"


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, user__is_active=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


def hash_token_key(key: str) -> str:
    # Keys are 256-bit random strings, so a fast unsalted hash is enough to make a stolen table useless.
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStatus:
    """`status` of a stored key with `revoked_at` and `expires_at`: API tokens and deployment tokens."""

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiToken(KeyStatus, models.Model):
    """A credential for scripts (`Authorization: Token <key>`). Only the key's hash is stored."""

    KEY_PREFIX = "pt_"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    key_hint = models.CharField(max_length=16, help_text="The first characters, to recognise a key.")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens",
        help_text="If set, the token only reaches this project.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_hint}…)"

    def mark_used(self) -> None:
        """Record that the key was used (the tokens page shows it). Writing on every call would turn each read
        into a write; a minute's precision is enough."""
        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at > timedelta(minutes=1):
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now



class NotificationQuerySet(models.QuerySet):
    def for_user(self, user) -> NotificationQuerySet:
        """Notifications are private: everyone, staff included, sees only their own."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(recipient=user)

    def unread(self) -> NotificationQuerySet:
        return self.filter(read_at__isnull=True)


class Notification(models.Model):
    """A message to one user about something that needs their attention, with a link to the page (see notify())."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)  # public id (URLs, API)
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=64, help_text="What happened, e.g. approval.requested.")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)  # plain text
    url = models.CharField(max_length=500, help_text="A path in the portal, e.g. /models/churn/v3/.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["recipient", "read_at"], name="notification_unread"),
                   models.Index(fields=["kind", "url", "created_at"], name="notification_kind_url")]

    def __str__(self) -> str:
        return f"{self.title} → {self.recipient}"

    @property
    def is_read(self) -> bool:
        return self.read_at is not None
