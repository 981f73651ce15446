"""Browser sessions end after PORTAL_SESSION_IDLE_MINUTES without a request; and headers Django does not set.

Only sessions are timed: API tokens are checked by DRF in the view, after this middleware, and a token
request carries no session, so scripts and serving clients are never signed out by it.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from apps.accounts import services

#: Session key holding the time (epoch seconds) of the last request seen from this session.
LAST_SEEN_KEY = "portal_last_seen"
# Writing the stamp on every request would save the session on every request; a minute's slack is harmless
# against a timeout measured in tens of minutes.
STAMP_EVERY_SECONDS = 60


class SessionIdleTimeoutMiddleware:
    """Signs out a session idle longer than PORTAL_SESSION_IDLE_MINUTES (0 turns this off)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        minutes = settings.PORTAL_SESSION_IDLE_MINUTES
        user = getattr(request, "user", None)
        if minutes <= 0 or user is None or not user.is_authenticated:
            return self.get_response(request)
        now = time.time()
        last_seen = request.session.get(LAST_SEEN_KEY)
        if isinstance(last_seen, (int, float)) and now - last_seen > minutes * 60:
            signed_out = self._sign_out(request, user, minutes, now - last_seen)
            if signed_out is not None:
                return signed_out
            return self.get_response(request)  # API: carries on as anonymous and gets its 401/403 there
        if not isinstance(last_seen, (int, float)) or now - last_seen >= STAMP_EVERY_SECONDS:
            request.session[LAST_SEEN_KEY] = now
        return self.get_response(request)

    def _sign_out(self, request, user, minutes: int, idle_seconds: float):
        # Not django.contrib.auth.logout(): its signal would record a second auth.logout without the reason.
        services.record_logout(user, request, reason="idle", idle_minutes=int(idle_seconds // 60),
                               limit_minutes=minutes)
        request.session.flush()
        request.user = AnonymousUser()
        if request.path.startswith("/api/"):
            return None
        messages.info(request, f"You were signed out because you had not used the portal for {minutes} minutes. "
                               "Sign in again to carry on.")
        login_url = reverse(settings.LOGIN_URL)
        if request.method == "GET" and request.path != login_url:
            login_url += "?" + urlencode({"next": request.get_full_path()})
        if request.headers.get("HX-Request"):
            # htmx would swap the login page into a fragment; have it load the page instead.
            response = HttpResponse(status=204)
            response["HX-Redirect"] = login_url
            return response
        return redirect(login_url)


class PermissionsPolicyMiddleware:
    """Permissions-Policy on every response (Django 5.2 has no setting for it): the portal needs no device."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.PORTAL_PERMISSIONS_POLICY:
            response.headers.setdefault("Permissions-Policy", settings.PORTAL_PERMISSIONS_POLICY)
        return response
