"""Password login with lockout: after LOGIN_FAILURE_LIMIT failures a (username, IP) pair must wait."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from apps.accounts import services


class LockoutModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is not None and services.login_locked_for(username, request) > 0:
            # PermissionDenied stops Django trying other backends and still fires user_login_failed.
            raise PermissionDenied("locked out")
        return super().authenticate(request, username=username, password=password, **kwargs)
