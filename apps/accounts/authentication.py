"""`Authorization: Token <key>` for scripts: looked up by the key's hash; revoked/expired keys fail."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken, hash_token_key


class ApiTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key):
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_token_key(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.status != "active":
            raise exceptions.AuthenticationFailed(f"This token is {token.status}. Create a new one.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This user account is deactivated.")
        token.mark_used()
        return token.user, token
