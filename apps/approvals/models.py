"""Approvals: environments with their sign-off policy, requests to run a model version there, and decisions.

A request is bound to the exact artifact it was opened for (the file's SHA-256, the MLflow artifact's
digest and the signature): if any of them differs later, the request and any approval it produced are void.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.accounts.models import Membership, Project

DEFAULT_QUESTIONS = [
    {"key": "intended_use", "text": "What will the model be used for, and by whom?", "kind": "text", "required": True},
    {"key": "affected_people", "text": "Who is affected by its outputs, and how?", "kind": "text", "required": True},
    {"key": "fairness_checked", "text": "Has performance been checked across the groups it affects?",
     "kind": "yes_no", "required": True},
    {"key": "fallback_plan", "text": "What happens if the model is switched off or wrong?", "kind": "text",
     "required": True},
]


class EnvironmentQuerySet(models.QuerySet):
    def visible_to(self, user) -> EnvironmentQuerySet:
        return self.filter(project__in=Project.objects.visible_to(user))


class Environment(models.Model):
    """Where a model can run (staging, production) and the sign-off it needs first."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=80)
    slug = models.SlugField(max_length=80)
    description = models.TextField(blank=True)
    # 0 means not gated: scientists may deploy there without approval.
    required_approvals = models.PositiveSmallIntegerField(default=1)
    approver_roles = models.JSONField(default=list)  # roles whose members may decide, e.g. ["approver", "admin"]
    high_risk_extra_approval = models.BooleanField(default=False)
    approval_valid_days = models.PositiveIntegerField(null=True, blank=True)  # approvals expire (re-certification)
    request_expiry_days = models.PositiveIntegerField(default=30)  # pending requests nobody decided
    reauth_required = models.BooleanField(default=False)  # approvers re-enter their password to decide
    auto_deploy = models.BooleanField(default=False)  # the final approval deploys (deployments feature)
    questions = models.JSONField(default=list, blank=True)  # the risk questionnaire; DEFAULT_QUESTIONS if empty
    created_at = models.DateTimeField(auto_now_add=True)

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["project", "required_approvals", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="unique_environment_slug")]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"

    @property
    def gated(self) -> bool:
        return self.required_approvals > 0

    @property
    def questionnaire(self) -> list[dict]:
        return self.questions or DEFAULT_QUESTIONS

    def approvals_needed(self, risk_tier: str) -> int:
        extra = 1 if self.high_risk_extra_approval and risk_tier == "high" and self.gated else 0
        return self.required_approvals + extra

    def deciding_roles(self) -> list[str]:
        return self.approver_roles or [Membership.Role.APPROVER, Membership.Role.ADMIN]


def signature_digest(signature) -> str:
    return hashlib.sha256(json.dumps(signature or {}, sort_keys=True).encode()).hexdigest()


class ApprovalRequestQuerySet(models.QuerySet):
    def visible_to(self, user) -> ApprovalRequestQuerySet:
        return self.filter(environment__project__in=Project.objects.visible_to(user))


class ApprovalRequest(models.Model):
    """A request to run one model version in one environment, with its evidence and the decisions on it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for decisions"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        WITHDRAWN = "withdrawn", "Withdrawn"
        EXPIRED = "expired", "Expired"
        VOID = "void", "Void (the model changed)"

    OPEN = (Status.PENDING,)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="requests")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="approvals")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    justification = models.TextField()
    answers = models.JSONField(default=dict, blank=True)
    evidence = models.JSONField(default=dict, blank=True)  # the packet as it was when requested
    validation = models.ForeignKey("registry.ModelValidation", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    required_approvals = models.PositiveSmallIntegerField()
    # What the approval is bound to.
    bound_sha256 = models.CharField(max_length=64)
    bound_artifact_sha256 = models.CharField(max_length=64)
    bound_signature_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)  # pending: until decided; approved: until re-certified
    closed_reason = models.TextField(blank=True)

    objects = ApprovalRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "environment"], condition=models.Q(status="pending"),
                                    name="one_pending_request_per_version_and_environment"),
        ]

    def __str__(self) -> str:
        return f"{self.model_version} → {self.environment.name}"

    @property
    def project(self) -> Project:
        return self.environment.project

    def artifact_matches(self) -> bool:
        version = self.model_version
        return (version.sha256, version.artifact_sha256, signature_digest(version.signature)) == (
            self.bound_sha256, self.bound_artifact_sha256, self.bound_signature_sha256)

    @property
    def is_current_approval(self) -> bool:
        """Approved, not expired, and still about the exact artifact it was given for."""
        return (self.status == self.Status.APPROVED and (self.expires_at is None or self.expires_at > timezone.now())
                and self.artifact_matches())


class Decision(models.Model):
    """One approver's verdict on a request, with their comment. One per approver and request."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        REQUEST_CHANGES = "request_changes", "Request changes"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["request", "approver"], name="one_decision_per_approver")]

    def __str__(self) -> str:
        return f"{self.approver} {self.verdict} {self.request}"

    @property
    def project(self) -> Project:
        return self.request.project
