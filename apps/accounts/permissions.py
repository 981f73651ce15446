"""The one permission policy: which role may do which action, asked by views, API and templates.

Roles are per project membership. Site staff manage projects and users on every project but gain no
project role by that (they still see a project's objects, to administer it).
"""

from __future__ import annotations

from django.db import models
from django.http import Http404
from rest_framework import permissions as drf_permissions

from apps.accounts.models import Membership, Project

Role = Membership.Role


class Action(models.TextChoices):
    VIEW_PROJECT = "project.view", "See the project and its objects"
    VIEW_MEMBERS = "project.view_members", "See who is in the project"
    MANAGE_MEMBERS = "project.manage_members", "Add, change and remove members"
    VIEW_AUDIT = "project.view_audit", "Read the project's audit trail"
    UPLOAD_DATA = "data.upload", "Upload, profile and anonymise datasets"
    VIEW_PII = "data.view_pii", "See columns flagged as personal data"
    REVEAL_PII = "data.reveal_pii", "Reveal PII columns to viewers"
    DELETE_DATA = "data.delete", "Delete datasets"
    IMPORT_MODEL = "model.import", "Import models and versions"
    EDIT_MODEL = "model.edit", "Edit model descriptions, lineage and tags; run model jobs"
    ARCHIVE_MODEL = "model.archive", "Archive and restore model versions"
    REQUEST_APPROVAL = "approval.request", "Ask for approval to deploy"
    DECIDE_APPROVAL = "approval.decide", "Approve or reject requests"
    DEPLOY = "deployment.deploy", "Deploy approved versions, roll back, manage deployment tokens"
    PREDICT = "deployment.predict", "Try predictions, call deployments"
    EXPORT_PREDICTIONS = "deployment.export_predictions", "Export the prediction log"
    MANAGE_ENVIRONMENTS = "project.manage_environments", "Manage environments and policies"
    TRUST_MODEL = "model.trust", "Trust quarantined model files"
    SEND_FEEDBACK = "monitoring.feedback", "Send ground truth (feedback) for logged predictions"
    MANAGE_ALERTS = "monitoring.manage_alerts", "Create and change alert rules and monitoring settings"
    RESPOND_ALERTS = "monitoring.respond_alerts", "Acknowledge, snooze and assign alerts"
    RETRAIN = "monitoring.retrain", "Start retraining of a deployed model"


_VIEWER = {Action.VIEW_PROJECT, Action.VIEW_MEMBERS, Action.PREDICT}
_SCIENTIST = _VIEWER | {Action.UPLOAD_DATA, Action.VIEW_PII, Action.IMPORT_MODEL, Action.EDIT_MODEL,
                        Action.REQUEST_APPROVAL, Action.DEPLOY, Action.SEND_FEEDBACK, Action.MANAGE_ALERTS,
                        Action.RESPOND_ALERTS, Action.RETRAIN}
_APPROVER = _VIEWER | {Action.DECIDE_APPROVAL, Action.VIEW_AUDIT, Action.VIEW_PII, Action.RESPOND_ALERTS}
_ADMIN = set(Action)

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset(_VIEWER),
    Role.SCIENTIST: frozenset(_SCIENTIST),
    Role.APPROVER: frozenset(_APPROVER),
    Role.ADMIN: frozenset(_ADMIN),
}
# What site staff may do on any project without being a member.
STAFF_ACTIONS = frozenset({Action.VIEW_PROJECT, Action.VIEW_MEMBERS, Action.MANAGE_MEMBERS, Action.VIEW_AUDIT})


def roles_of(user) -> dict[int, str]:
    """{project id: role} of every project the user belongs to."""
    if not user.is_authenticated:
        return {}
    cache = getattr(user, "_portal_roles", None)
    if cache is None:
        cache = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
        user._portal_roles = cache  # one query per request, whatever the page asks
    return cache


def role_in(user, project: Project) -> str | None:
    return roles_of(user).get(project.pk)


def project_of(obj) -> Project | None:
    if isinstance(obj, Project):
        return obj
    return getattr(obj, "project", None)


def can(user, action: str, obj) -> bool:
    """May `user` do `action` on `obj` (a Project, or anything with a `.project`)?"""
    if not user.is_authenticated or not user.is_active:
        return False
    project = project_of(obj)
    if project is None:
        return False
    role = role_in(user, project)
    if role is not None and action in ROLE_ACTIONS[role]:
        return True
    return user.is_staff and action in STAFF_ACTIONS


def can_see(user, obj) -> bool:
    return can(user, Action.VIEW_PROJECT, obj)


def projects_with_action(user, action: str):
    """Projects where the user may do `action` (a queryset, for filtering other querysets)."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_staff and action in STAFF_ACTIONS:
        return Project.objects.all()
    roles = [role for role, actions in ROLE_ACTIONS.items() if action in actions]
    return Project.objects.filter(memberships__user=user, memberships__role__in=roles)


def shares_project_with(user, other) -> bool:
    """Can `user` see `other` at all (staff, or a project they both belong to)? Else they get 404s."""
    if not user.is_authenticated:
        return False
    return user.is_staff or Project.objects.filter(memberships__user=user).filter(
        memberships__user=other).exists()


def require(user, action: str, obj) -> None:
    """Raise 404 when the user may not even see the object, PermissionDenied (403) when they may only look."""
    from django.core.exceptions import PermissionDenied

    if not can_see(user, obj):
        raise Http404
    if not can(user, action, obj):
        raise PermissionDenied


def token_allows(token, obj) -> bool:
    """A project-scoped API token reaches only its own project."""
    scoped = getattr(token, "project_id", None)
    if not scoped:
        return True
    project = project_of(obj)
    return project is not None and project.pk == scoped


class PortalPermission(drf_permissions.BasePermission):
    """DRF's door to the policy: outsiders get 404, members without the action 403.

    A view names what it needs with `required_actions = {"GET": Action..., "POST": ...}`; unsafe
    methods default to the view's `write_action`, reads to VIEW_PROJECT.
    """

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj) -> bool:
        if not token_allows(request.auth, obj) or not can_see(request.user, obj):
            raise Http404
        action = getattr(view, "required_actions", {}).get(request.method)
        if action is None:
            action = Action.VIEW_PROJECT if request.method in drf_permissions.SAFE_METHODS else view.write_action
        return can(request.user, action, obj)


def may_manage_sso(user) -> bool:
    """Single sign-on group mappings are site-wide (they grant roles in any project): site staff only."""
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class SiteStaffPermission(drf_permissions.BasePermission):
    """Site-wide settings: staff only, and not through a token limited to one project."""

    message = "Only site staff can do this."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return may_manage_sso(request.user) and not getattr(request.auth, "project_id", None)
