"""Audit sign-ins and sign-outs (Django's auth signals), and count failures for the lockout; and what
accounts tell apps to their right."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import Signal, receiver

from apps.accounts import services

#: Sent after a commit that revoked tokens or deactivated a user in bulk (no post_save); kwargs: user.
#: Deployments listen: their serving processes cache who a token belongs to.
credentials_changed = Signal()


SSO_BACKEND = "apps.accounts.sso.PortalOIDCBackend"


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    method = "sso" if getattr(user, "backend", "") == SSO_BACKEND else "password"
    services.record_login(user, request, method=method)


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        services.record_logout(user, request)


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    if "nonce" in credentials or "code_verifier" in credentials:
        return  # an SSO callback: its view audits the failure with the reason (no password was guessed)
    refused = getattr(request, "portal_login_refused", None)
    if refused:
        services.record_refused_login(credentials.get("username", ""), request)
        return
    services.record_failed_login(credentials.get("username", ""), request)
