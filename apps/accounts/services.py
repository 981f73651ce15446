"""Every change to users, projects, memberships and tokens: atomic, permission-checked, audited."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from apps.accounts import signals as account_signals
from apps.accounts.models import ApiToken, Membership, Project, hash_token_key
from apps.accounts.notifications import mark_all_read as mark_all_read  # re-exported: services.notify(...)
from apps.accounts.notifications import mark_read as mark_read
from apps.accounts.notifications import notify as notify
from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.audit.services import request_client_ip

User = get_user_model()


# --- Sign-in, sign-out, lockout ------------------------------------------------------------------------


def _lockout_key(username: str, request) -> str:
    ip = request_client_ip(request) if request is not None else "-"
    return f"login-failures:{username.strip().lower()}:{ip}"


def login_locked_for(username: str, request) -> int:
    """Seconds the (username, IP) pair must still wait, or 0 if it may try."""
    key = _lockout_key(username, request)
    if (cache.get(key) or 0) < settings.LOGIN_FAILURE_LIMIT:
        return 0
    return max(0, int((cache.get(f"{key}:until") or 0) - timezone.now().timestamp()))


def record_failed_login(username: str, request) -> None:
    key, window = _lockout_key(username, request), settings.LOGIN_LOCKOUT_SECONDS
    # add + incr: atomic on Redis (production), so parallel guesses cannot share one count.
    cache.add(key, 0, window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, window)
        count = 1
    cache.touch(key, window)
    cache.set(f"{key}:until", timezone.now().timestamp() + window, window)
    user = User.objects.filter(username__iexact=username).first() if username else None
    audit.record("auth.login_failed", actor=None, obj=user, actor_label=username[:150],
                 details={"attempt": count, "locked": count >= settings.LOGIN_FAILURE_LIMIT})


def record_login(user, request, *, method: str = "password") -> None:
    key = _lockout_key(user.get_username(), request)
    cache.delete_many([key, f"{key}:until"])
    audit.record("auth.login", actor=user, obj=user, details={"method": method})


def record_refused_login(username: str, request) -> None:
    """A right password that PORTAL_LOCAL_LOGIN does not accept: audited, not counted toward the lockout."""
    user = User.objects.filter(username__iexact=username).first() if username else None
    audit.record("auth.login_failed", actor=None, obj=user, actor_label=username[:150],
                 details={"method": "password", "reason": "local login restricted"})


def local_login_refusal(user=None) -> str | None:
    """Why the password form (and the password-based token endpoint) refuses this user, or None if allowed.

    PORTAL_LOCAL_LOGIN: "on" (everyone), "admins" (staff and superusers: the break-glass accounts), "off".
    Without a user, answers for "anyone at all" (the form can say so before checking a password).
    """
    mode = settings.PORTAL_LOCAL_LOGIN
    sso_hint = (f" Use “Sign in with {settings.OIDC_PROVIDER_NAME}” instead."
                if settings.OIDC_ISSUER and settings.OIDC_RP_CLIENT_ID else "")
    if mode == "off":
        return "Signing in with a password is switched off on this portal." + sso_hint
    if mode == "admins" and user is not None and not (user.is_staff or user.is_superuser):
        return "Signing in with a password is reserved for administrators here." + sso_hint
    return None


def record_logout(user, request, *, reason: str = "", **details) -> None:
    """A sign-out: by the person (no reason), or by the portal (e.g. reason "idle", with the minutes)."""
    audit.record("auth.logout", actor=user, obj=user,
                 details={"reason": reason, **details} if reason else None)


# --- Projects and memberships -----------------------------------------------------------------------


def create_project(*, actor, slug: str, name: str, description: str = "") -> Project:
    """Staff create projects; the creator does not become a member unless they add themselves."""
    if not actor.is_staff:
        raise PermissionDenied("Only site staff can create projects.")
    if Project.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": ["A project with this slug already exists."]})
    with transaction.atomic():
        project = Project(slug=slug, name=name, description=description, created_by=actor)
        project.full_clean()
        project.save()
        audit.record("project.create", actor=actor, obj=project, details={"name": name})
    return project


def _forget_cached_roles(*users) -> None:
    for user in users:
        if hasattr(user, "_portal_roles"):
            del user._portal_roles


def find_user(identifier: str):
    identifier = identifier.strip()
    if not identifier:
        return None
    return (User.objects.filter(username__iexact=identifier).first()
            or User.objects.filter(email__iexact=identifier).first())


def add_member(project: Project, *, actor, user, role: str) -> Membership:
    require(actor, Action.MANAGE_MEMBERS, project)
    if role not in Membership.Role.values:
        raise ValidationError({"role": [f"Choose one of {', '.join(Membership.Role.values)}."]})
    if not user.is_active:
        raise ValidationError({"user": [f"{user.username} is deactivated; reactivate them first."]})
    try:
        with transaction.atomic():
            membership = Membership.objects.create(project=project, user=user, role=role)
            audit.record("membership.add", actor=actor, obj=membership, project=project,
                         details={"user": user.username, "role": role})
    except IntegrityError:
        raise ValidationError({"user": [f"{user.username} is already a member of {project.name}."]}) from None
    _forget_cached_roles(user)
    return membership


def invite_member(project: Project, *, actor, email: str, role: str, request=None) -> Membership:
    """Create an account for a new e-mail address, add it to the project and mail a set-password link."""
    require(actor, Action.MANAGE_MEMBERS, project)
    email = User.objects.normalize_email(email.strip())
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError({"user": [f"{email} already has an account; add it by username."]})
    # E-mail local parts allow characters usernames do not (o'brien, a#b); keep only the allowed ones.
    base = re.sub(r"[^\w.@+-]", "", email.split("@")[0].lower())[:140] or "user"
    username, n = base, 1
    while User.objects.filter(username__iexact=username).exists():
        n += 1
        username = f"{base}{n}"
    with transaction.atomic():
        user = User(username=username, email=email)
        user.set_unusable_password()
        user.save()
        audit.record("user.invite", actor=actor, obj=user, project=project, details={"email": email})
        membership = add_member(project, actor=actor, user=user, role=role)
        transaction.on_commit(lambda: _send_invitation(user, project, actor, request))
    return membership


def _send_invitation(user, project: Project, actor, request) -> None:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    path = reverse("password_reset_confirm", args=[uid, default_token_generator.make_token(user)])
    link = request.build_absolute_uri(path) if request is not None else path
    send_mail(
        f"You have been invited to {project.name} on Portal",
        f"{actor} added you to the project {project.name}.\n\n"
        f"Your username is {user.username}. Choose a password here (the link works for 3 days):\n{link}\n",
        None, [user.email],
    )


def _guard_last_admin(membership: Membership, *, new_role: str | None) -> None:
    if membership.role != Membership.Role.ADMIN or new_role == Membership.Role.ADMIN:
        return
    admins = Membership.objects.filter(project=membership.project, role=Membership.Role.ADMIN,
                                       user__is_active=True)
    if admins.exclude(pk=membership.pk).count() == 0:
        raise ValidationError({"role": ["A project must keep at least one active admin. "
                                        "Make someone else admin first."]})


def change_role(membership: Membership, *, actor, role: str) -> Membership:
    require(actor, Action.MANAGE_MEMBERS, membership.project)
    if role not in Membership.Role.values:
        raise ValidationError({"role": [f"Choose one of {', '.join(Membership.Role.values)}."]})
    if role == membership.role:
        return membership
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        _guard_last_admin(membership, new_role=role)
        old = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        audit.record("membership.change_role", actor=actor, obj=membership, project=membership.project,
                     details={"user": membership.user.username, "from": old, "to": role})
    _forget_cached_roles(membership.user, actor)
    return membership


def remove_member(membership: Membership, *, actor) -> None:
    require(actor, Action.MANAGE_MEMBERS, membership.project)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        _guard_last_admin(membership, new_role=None)
        audit.record("membership.remove", actor=actor, obj=membership, project=membership.project,
                     details={"user": membership.user.username, "role": membership.role})
        membership.delete()
    _forget_cached_roles(membership.user, actor)


def can_deactivate(actor, user) -> bool:
    """Staff may deactivate anyone but themselves; a project admin only users whose every project
    they administer (so one project's admin cannot lock someone out of another project)."""
    if not actor.is_authenticated or actor.pk == user.pk or user.is_superuser and not actor.is_superuser:
        return False
    if actor.is_staff:
        return True
    if user.is_staff:
        return False
    projects = list(Project.objects.filter(memberships__user=user))
    return bool(projects) and all(can(actor, Action.MANAGE_MEMBERS, p) for p in projects)


def set_user_active(user, *, actor, active: bool) -> None:
    if not can_deactivate(actor, user):
        raise PermissionDenied("You may not change this user's access.")
    if user.is_active == active:
        return
    if not active:
        for membership in Membership.objects.filter(user=user, role=Membership.Role.ADMIN).select_related("project"):
            others = Membership.objects.filter(project=membership.project, role=Membership.Role.ADMIN,
                                               user__is_active=True).exclude(user=user)
            if not others.exists():
                raise ValidationError({"user": [
                    f"{user.username} is the only active admin of {membership.project.name}. "
                    "Make someone else admin there first."]})
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(is_active=active)
        user.is_active = active
        if not active:
            ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
        audit.record("user.activate" if active else "user.deactivate", actor=actor, obj=user)
        transaction.on_commit(lambda: account_signals.credentials_changed.send(sender=User, user=user))
    if not active:
        _end_sessions_of(user)


def _end_sessions_of(user) -> None:
    # Sessions are signed blobs keyed by id; the only way to find a user's is to decode them.
    from django.contrib.sessions.models import Session

    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get("_auth_user_id")) == str(user.pk):
            session.delete()


# --- API tokens -------------------------------------------------------------------------------------


def create_token(*, actor, name: str, project: Project | None = None,
                 expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Return the token and its key; the key is shown once and only its hash is kept."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["Give the token a name, e.g. the script that will use it."]})
    if project is not None and not can(actor, Action.VIEW_PROJECT, project):
        raise ValidationError({"project": ["You are not a member of that project."]})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["The expiry must be in the future."]})
    key = ApiToken.KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(user=actor, name=name[:100], key_hash=hash_token_key(key),
                                        key_hint=key[:10], project=project, expires_at=expires_at)
        audit.record("token.create", actor=actor, obj=token, project=project,
                     details={"name": token.name, "expires_at": expires_at, "hint": token.key_hint})
    return token, key


def revoke_token(token: ApiToken, *, actor) -> None:
    if token.user_id != actor.pk and not actor.is_staff:
        raise PermissionDenied("You may only revoke your own tokens.")
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if updated:
            audit.record("token.revoke", actor=actor, obj=token, project=token.project,
                         details={"name": token.name, "hint": token.key_hint})
            transaction.on_commit(lambda: account_signals.credentials_changed.send(sender=ApiToken, user=token.user))
    token.refresh_from_db()
