"""What guidance remembers per person: which role's first-run tour they have dismissed."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TourProgress(models.Model):
    """One person's first-run tour for one role: shown until dismissed, so a later role gets its own tour once."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "Stakeholder"
        SCIENTIST = "scientist", "Data scientist"
        APPROVER = "approver", "Approver"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tour_progress")
    role = models.CharField(max_length=16, choices=Role.choices)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "role"], name="one_tour_per_user_and_role")]

    def __str__(self) -> str:
        return f"{self.user} · {self.role} tour"
