"""Audit sign-ins and sign-outs (Django's auth signals), and count failures for the lockout; and what
accounts tell apps to their right."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import Signal, receiver

from apps.accounts import services

#: Sent after a commit that revoked tokens or deactivated a user in bulk (no post_save); kwargs: user.
#: Deployments listen: their serving processes cache who a token belongs to.
credentials_changed = Signal()


@receiver(user_logged_in)
def on_login(sender, request, user, **kwargs):
    services.record_login(user, request)


@receiver(user_logged_out)
def on_logout(sender, request, user, **kwargs):
    if user is not None:
        services.record_logout(user, request)


@receiver(user_login_failed)
def on_login_failed(sender, credentials, request=None, **kwargs):
    services.record_failed_login(credentials.get("username", ""), request)
