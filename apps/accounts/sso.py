"""Single sign-on with OpenID Connect: mozilla-django-oidc's code flow, configured from OIDC_ISSUER's discovery
document, creating/updating the user from their claims and applying the group mappings at every login."""

from __future__ import annotations

import logging
import threading

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.views import LogoutView
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from apps.accounts import sso_services

logger = logging.getLogger(__name__)

_discovered: dict[str, dict] = {}
_discovery_lock = threading.Lock()


class SSOUnavailable(Exception):
    """The identity provider could not be reached or answered nonsense; the message is for people."""


class SSORefused(Exception):
    """The provider vouched for someone the portal will not sign in this way; the message is for people."""

    def __init__(self, message: str, *, reason: str, user=None):
        super().__init__(message)
        self.reason, self.user = reason, user


_NO_NAME = ("The sign-in service did not tell the portal who you are (no user name). "
            "Tell your portal administrator.")
_PRIVILEGED = ("This is a local administrator account of the portal. It cannot be used through single sign-on: "
               "sign in with its password, or ask the site staff for an account of your own.")


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER and settings.OIDC_RP_CLIENT_ID)


def provider_config() -> dict:
    """The issuer's discovery document, fetched on first use (so startup works offline) and kept per process."""
    issuer = settings.OIDC_ISSUER
    config = _discovered.get(issuer)
    if config is not None:
        return config
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        config = response.json()
        missing = [key for key in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not config.get(key)]
    except (requests.RequestException, ValueError) as exc:
        logger.warning("OIDC discovery at %s failed: %s", url, exc)
        raise SSOUnavailable("The sign-in service could not be reached. Try again in a few minutes; if it "
                             "keeps failing, tell your portal administrator.") from None
    if missing:
        logger.warning("OIDC discovery at %s lacks %s", url, ", ".join(missing))
        raise SSOUnavailable("The sign-in service is not set up correctly. Tell your portal administrator.")
    with _discovery_lock:
        _discovered[issuer] = config
    return config


def forget_provider_config() -> None:
    """Fetch the discovery document again on next use (tests; a provider that moved its endpoints)."""
    with _discovery_lock:
        _discovered.clear()


class PortalOIDCBackend(OIDCAuthenticationBackend):
    """Signs in the person the provider vouches for, keeps their profile current, applies group mappings.

    Users are matched by username (preferred_username, else sub), never by e-mail: an e-mail address the
    provider has not verified must not open someone else's account.
    """

    def __init__(self, *args, **kwargs):
        # Django builds backends on every request that has a session; the parent reads (and requires)
        # endpoint settings here. Ours are discovered, so they are loaded only when a callback arrives.
        self.UserModel = get_user_model()

    def get_user(self, user_id):
        # The parent returns deactivated users too; Django's own backend does not, so neither do we.
        return ModelBackend.get_user(self, user_id)

    def _configure(self) -> None:
        config = provider_config()
        self.OIDC_OP_TOKEN_ENDPOINT = config["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = config.get("userinfo_endpoint")
        self.OIDC_OP_JWKS_ENDPOINT = config["jwks_uri"]
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, **kwargs):
        # Only the SSO callback passes a nonce; password logins (username/password) are not ours.
        if not enabled() or "nonce" not in kwargs or "username" in kwargs or "password" in kwargs:
            return None
        self._configure()
        return super().authenticate(request, **kwargs)

    def retrieve_matching_jwk(self, token):
        """The provider's key for this token. The parent requires a `kid` in the token header, but it is optional
        (RFC 7515) and some providers leave it out when they publish a single key; then that key is the one."""
        header = jwt.get_unverified_header(token)
        if header.get("kid"):
            return super().retrieve_matching_jwk(token)
        response = requests.get(self.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        keys = [key for key in response.json().get("keys", [])
                if key.get("use", "sig") == "sig" and key.get("alg", header.get("alg")) == header.get("alg")]
        if len(keys) != 1:
            raise SuspiciousOperation("The ID token names no key and the provider publishes several.")
        return jwt.PyJWK(keys[0])

    def get_userinfo(self, access_token, id_token, payload):
        claims = dict(super().get_userinfo(access_token, id_token, payload)) if self.OIDC_OP_USER_ENDPOINT else {}
        # Some providers (Entra ID, Keycloak by default) put the groups only in the ID token.
        for name, value in payload.items():
            claims.setdefault(name, value)
        return claims

    def verify_claims(self, claims) -> bool:
        if not claims.get("sub") or not sso_services.username_from_claims(claims):
            raise SSORefused(_NO_NAME, reason="claims refused")
        return True

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(username__iexact=sso_services.username_from_claims(claims))

    def create_user(self, claims):
        user = sso_services.provision_user(claims)
        return self._apply_groups(user, claims)

    def update_user(self, user, claims):
        if not user.is_active:
            return user  # the callback refuses them; a deactivated account's access stays as it was
        if (user.is_staff or user.is_superuser) and user.has_usable_password():
            # Accounts are matched by user name, so a provider (or a person who can pick their own name there)
            # must not be able to open the break-glass administrator accounts, which stay password-only.
            raise SSORefused(_PRIVILEGED, reason="privileged local account", user=user)
        sso_services.refresh_profile(user, claims)
        return self._apply_groups(user, claims)

    def _apply_groups(self, user, claims):
        groups = sso_services.groups_from_claim(claims.get(settings.OIDC_GROUPS_CLAIM))
        sso_services.apply_group_mappings(user, groups, request=self.request)
        return user


# --- Views ------------------------------------------------------------------------------------------


def _failure(request, message: str, *, status: int = 400):
    return render(request, "accounts/sso_failed.html", {"message": message}, status=status)


class SSOStartView(OIDCAuthenticationRequestView):
    """"Sign in with …": sends the browser to the provider's authorization endpoint."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the parent would read the endpoint from settings; it is discovered

    def get(self, request):
        if not enabled():
            raise Http404
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_config()["authorization_endpoint"]
        except SSOUnavailable as exc:
            return _failure(request, str(exc), status=503)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


# What went wrong, in words for the person who was trying to sign in.
_EXPIRED = ("The sign-in could not be completed because it took too long or was started in another browser "
            "window. Start again from the sign-in page.")
_BROKEN = ("The sign-in service answered in a way the portal could not accept. Try again; if it keeps failing, "
           "tell your portal administrator.")
_DEACTIVATED = ("Your portal account is deactivated, so you cannot sign in. Ask a project admin or the site "
                "staff to reactivate it.")


class SSOCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back. Any failure ends on a page saying what happened."""

    def get(self, request):
        if not enabled():
            raise Http404
        self.user = None
        if request.GET.get("error"):
            super().get(request)  # drops the used state and any half-signed-in session
            description = request.GET.get("error_description") or request.GET["error"]
            sso_services.record_sso_failure("provider error", request, detail=description)
            if request.GET["error"] == "access_denied":
                return _failure(request, "The sign-in was cancelled or refused at the sign-in service. "
                                         "Start again from the sign-in page if you want to sign in.")
            return _failure(request, f"The sign-in service reported a problem: {description[:200]}")
        try:
            response = super().get(request)
        except SuspiciousOperation:  # the state is not one this browser started
            sso_services.record_sso_failure("state mismatch", request)
            return _failure(request, _EXPIRED)
        except SSOUnavailable as exc:
            sso_services.record_sso_failure("provider unreachable", request)
            return _failure(request, str(exc), status=503)
        except SSORefused as exc:
            sso_services.record_sso_failure(exc.reason, request, user=exc.user)
            return _failure(request, str(exc), status=403)
        except (requests.RequestException, jwt.PyJWTError, ValueError, KeyError) as exc:
            logger.warning("OIDC callback failed: %s", exc)
            sso_services.record_sso_failure("provider exchange failed", request, detail=str(exc))
            return _failure(request, _BROKEN, status=502)
        return response

    def login_failure(self):
        request, user = self.request, getattr(self, "user", None)
        if request.GET.get("error"):
            return None  # get() answers provider errors itself
        if user is not None and not user.is_active:
            sso_services.record_sso_failure("deactivated", request, user=user)
            return _failure(request, _DEACTIVATED, status=403)
        if "code" not in request.GET or "state" not in request.GET or "oidc_states" not in request.session:
            sso_services.record_sso_failure("state mismatch", request)
            return _failure(request, _EXPIRED)
        sso_services.record_sso_failure("claims refused", request)
        return _failure(request, _NO_NAME)


class SignOutView(LogoutView):
    """Sign out of the portal and, for a single sign-on session, of the identity provider too (RP-initiated
    logout): on a shared computer, "Sign out" must not leave the provider ready to sign the next person in."""

    def post(self, request, *args, **kwargs):
        id_token = request.session.get("oidc_id_token")
        response = super().post(request, *args, **kwargs)
        if not (id_token and enabled() and settings.OIDC_SIGN_OUT_AT_PROVIDER):
            return response
        try:
            endpoint = provider_config().get("end_session_endpoint")
        except SSOUnavailable:
            endpoint = None  # the portal session has ended; the provider's cannot be reached now
        if not endpoint:
            return response
        back = request.build_absolute_uri(reverse("login"))
        query = urlencode({"id_token_hint": id_token, "client_id": settings.OIDC_RP_CLIENT_ID,
                           "post_logout_redirect_uri": back})
        return HttpResponseRedirect(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}")
