"""What single sign-on changes: SSO accounts, the group → project role mappings, and applying them at each
login. Atomic and audited like every other accounts service (see services.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from apps.accounts.models import GroupMapping, Membership, Project
from apps.accounts.permissions import may_manage_sso
from apps.accounts.services import _forget_cached_roles
from apps.audit import services as audit
from apps.audit.services import request_client_ip

User = get_user_model()

# When several groups map one person to the same project, the strongest role wins.
_ROLE_RANK = {role: rank for rank, role in enumerate(Membership.Role.values)}
SSO_LABEL = "single sign-on"  # the audit trail's actor for changes made by the identity provider's groups


# --- Accounts ---------------------------------------------------------------------------------------


def username_from_claims(claims: dict) -> str:
    """preferred_username if the provider sends one, else the subject; only characters Django allows."""
    raw = str(claims.get("preferred_username") or claims.get("sub") or "")
    return re.sub(r"[^\w.@+-]", "", raw)[:150]


def _profile_from_claims(claims: dict) -> dict[str, str]:
    first, last = claims.get("given_name") or "", claims.get("family_name") or ""
    if not first and not last and claims.get("name"):
        first = str(claims["name"])
    return {"email": str(claims.get("email") or "")[:254], "first_name": str(first)[:150],
            "last_name": str(last)[:150]}


def provision_user(claims: dict):
    """Create the account of someone signing in through SSO for the first time (no usable password)."""
    with transaction.atomic():
        user = User(username=username_from_claims(claims), **_profile_from_claims(claims))
        user.set_unusable_password()
        user.save()
        audit.record("user.create", actor=None, actor_label=SSO_LABEL, obj=user,
                     details={"method": "sso", "username": user.username})
    return user


def refresh_profile(user, claims: dict):
    """Keep e-mail and names as the identity provider has them now."""
    profile = _profile_from_claims(claims)
    changed = {field: value for field, value in profile.items() if value and getattr(user, field) != value}
    if changed:
        with transaction.atomic():
            User.objects.filter(pk=user.pk).update(**changed)
            for field, value in changed.items():
                setattr(user, field, value)
            audit.record("user.update", actor=None, actor_label=SSO_LABEL, obj=user,
                         details={"method": "sso", "fields": sorted(changed)})
    return user


def groups_from_claim(value) -> list[str]:
    """Providers send a list of names, or one name as a string (a single group)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list | tuple):
        return [str(item) for item in value if isinstance(item, str | int) and str(item)]
    return []


def apply_group_mappings(user, groups: Iterable[str], *, request=None) -> dict[str, list[str]]:
    """Make the user's SSO-granted memberships match their groups now: grant, change or revoke.

    Memberships added by hand are never touched (not even upgraded): an admin's decision outranks a group.
    Returns the project slugs added / changed / removed (for tests and logs).
    """
    groups = sorted(set(groups))
    wanted: dict[int, tuple[Project, str, list[str]]] = {}
    for mapping in GroupMapping.objects.filter(group__in=groups).select_related("project"):
        current = wanted.get(mapping.project_id)
        if current is None or _ROLE_RANK[mapping.role] > _ROLE_RANK[current[1]]:
            wanted[mapping.project_id] = (mapping.project, mapping.role,
                                          (current[2] if current else []) + [mapping.group])
        else:
            current[2].append(mapping.group)
    ip = request_client_ip(request) if request is not None else None
    outcome: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
    with transaction.atomic():
        existing = {m.project_id: m for m in
                    Membership.objects.select_for_update().filter(user=user).select_related("project")}
        for project_id, (project, role, via) in wanted.items():
            membership = existing.get(project_id)
            if membership is None:
                membership = Membership.objects.create(user=user, project=project, role=role,
                                                       source=Membership.Source.SSO)
                audit.record("membership.add", actor=None, actor_label=SSO_LABEL, obj=membership, client_ip=ip,
                             details={"user": user.username, "role": role, "source": "sso", "groups": via})
                outcome["added"].append(project.slug)
            elif membership.source == Membership.Source.SSO and membership.role != role:
                old, membership.role = membership.role, role
                membership.save(update_fields=["role"])
                audit.record("membership.change_role", actor=None, actor_label=SSO_LABEL, obj=membership,
                             client_ip=ip, details={"user": user.username, "from": old, "to": role,
                                                    "source": "sso", "groups": via})
                outcome["changed"].append(project.slug)
        for project_id, membership in existing.items():
            if membership.source == Membership.Source.SSO and project_id not in wanted:
                # No last-admin guard here: the provider is the authority on who is still in the group,
                # and a person who left it must lose access. Staff can name a new admin.
                audit.record("membership.remove", actor=None, actor_label=SSO_LABEL, obj=membership,
                             client_ip=ip, details={"user": user.username, "role": membership.role,
                                                    "source": "sso", "reason": "no mapped group any more"})
                membership.delete()
                outcome["removed"].append(membership.project.slug)
    _forget_cached_roles(user)
    return outcome


def record_sso_failure(reason: str, request, *, user=None, detail: str = "") -> None:
    """A refused or broken SSO sign-in (the password lockout does not count these: no password was guessed)."""
    audit.record("auth.login_failed", actor=None, obj=user, actor_label=(user.username if user else "")[:150],
                 client_ip=request_client_ip(request) if request is not None else None,
                 details={"method": "sso", "reason": reason, **({"detail": detail[:300]} if detail else {})})


# --- Group mappings (staff) --------------------------------------------------------------------------


def _require_sso_admin(actor) -> None:
    if not may_manage_sso(actor):
        raise PermissionDenied("Only site staff can change single sign-on group mappings.")


def _clean_mapping(group: str, role: str) -> str:
    group = (group or "").strip()
    if not group:
        raise ValidationError({"group": ["Enter the group's name as the identity provider sends it."]})
    if len(group) > 200:
        raise ValidationError({"group": ["A group name can have at most 200 characters."]})
    if role not in Membership.Role.values:
        raise ValidationError({"role": [f"Choose one of {', '.join(Membership.Role.values)}."]})
    return group


def create_group_mapping(*, actor, group: str, project: Project, role: str) -> GroupMapping:
    _require_sso_admin(actor)
    group = _clean_mapping(group, role)
    try:
        with transaction.atomic():
            mapping = GroupMapping.objects.create(group=group, project=project, role=role, created_by=actor)
            audit.record("sso.mapping.create", actor=actor, obj=mapping, project=project,
                         details={"group": group, "role": role})
    except IntegrityError:
        raise ValidationError({"group": [f"The group “{group}” already has a role in {project.name}; "
                                         "delete that mapping first or change its role."]}) from None
    return mapping


def change_group_mapping(mapping: GroupMapping, *, actor, role: str) -> GroupMapping:
    _require_sso_admin(actor)
    _clean_mapping(mapping.group, role)
    if role == mapping.role:
        return mapping
    with transaction.atomic():
        old, mapping.role = mapping.role, role
        mapping.save(update_fields=["role"])
        audit.record("sso.mapping.change", actor=actor, obj=mapping, project=mapping.project,
                     details={"group": mapping.group, "from": old, "to": role})
    return mapping


def delete_group_mapping(mapping: GroupMapping, *, actor) -> None:
    """Memberships it granted end at each person's next SSO login (their session is not cut short)."""
    _require_sso_admin(actor)
    with transaction.atomic():
        audit.record("sso.mapping.delete", actor=actor, obj=mapping, project=mapping.project,
                     details={"group": mapping.group, "role": mapping.role})
        mapping.delete()
