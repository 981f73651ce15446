"""Password login with lockout: after LOGIN_FAILURE_LIMIT failures a (username, IP) pair must wait; and
PORTAL_LOCAL_LOGIN decides who may use a password at all."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from apps.accounts import services


class LockoutModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is not None and services.login_locked_for(username, request) > 0:
            # PermissionDenied stops Django trying other backends and still fires user_login_failed.
            raise PermissionDenied("locked out")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        refusal = services.local_login_refusal(user) if user is not None else None
        if refusal:
            # The password was right but PORTAL_LOCAL_LOGIN forbids its use: tell the form and the token
            # endpoint why, and keep it out of the lockout count (see signals.on_login_failed).
            if request is not None:
                request.portal_login_refused = refusal
            return None
        return user
