"""The OpenID Connect client (Authlib): authorization code with PKCE S256, state and nonce,
RS256 ID tokens; and the rules that turn the provider's claims into a login and a role."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

from services.api.principal import Role
from services.api.ui.auth.store import Identity
from shared.settings import ApiSettings

# Authlib logs the PKCE verifier at DEBUG: never let it reach the logs, whatever LOG_LEVEL.
logging.getLogger("authlib").setLevel(logging.INFO)

CALLBACK_PATH = "/ui/auth/callback"
ID_TOKEN_ALGORITHMS = ["RS256"]


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dot path (`realm_access.roles`), or None when any step is missing.

    A claim whose own name contains dots (`https://example.com/groups`) is found as is first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def groups_of(value: Any) -> set[str]:
    """A groups claim as a set: a list of names, or one name."""
    if isinstance(value, str):
        return {value} if value else set()
    if isinstance(value, list | tuple):
        return {str(item) for item in value if isinstance(item, str | int)}
    return set()


def role_for(groups: set[str], admin_groups: list[str], viewer_groups: list[str]) -> Role | None:
    """Admin if in an admin group, else viewer if in a viewer group, else no role at all."""
    if groups & set(admin_groups):
        return Role.ADMIN
    if groups & set(viewer_groups):
        return Role.VIEWER
    return None


def identity_of(claims: Mapping[str, Any]) -> Identity:
    subject = str(claims["sub"])
    email = str(claims.get("email") or "")
    login = str(claims.get("preferred_username") or email or subject)
    return Identity(subject=subject, login=login, name=str(claims.get("name") or ""), email=email)


class SignInError(Exception):
    """The provider's answer could not be accepted (state, nonce, token, signature...)."""


class Provider:
    """The console's client of the identity provider (discovery is fetched when first used)."""

    def __init__(self, settings: ApiSettings) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id
        self.settings = settings
        self.redirect_uri = settings.ui_base_url + CALLBACK_PATH
        secret = settings.oidc_client_secret
        oauth = OAuth()
        self.client: StarletteOAuth2App = oauth.register(
            "console",
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            server_metadata_url=settings.oidc_issuer.rstrip("/")
            + "/.well-known/openid-configuration",
            client_kwargs={
                "scope": settings.oidc_scopes,
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": settings.oidc_token_auth_method,
                "timeout": 10.0,
            },
        )

    async def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = await self.client.load_server_metadata()
        # Whatever the provider offers, only RS256 ID tokens are accepted.
        metadata["id_token_signing_alg_values_supported"] = ID_TOKEN_ALGORITHMS
        return metadata

    async def authorize_redirect(self, request: Any) -> Any:
        """The redirect to the provider's sign-in; state, nonce and the PKCE verifier are kept
        in the signed, short-lived sign-in cookie."""
        await self.metadata()
        return await self.client.authorize_redirect(request, self.redirect_uri)

    async def finish(self, request: Any) -> tuple[Identity, set[str], str | None]:
        """Exchanges the code (checking state, PKCE, the ID token's signature, issuer,
        audience and nonce) and returns who signed in, their groups and the ID token."""
        await self.metadata()
        token = await self.client.authorize_access_token(request)
        claims = token.get("userinfo")
        if not claims:
            raise SignInError("the provider returned no ID token")
        claims = dict(claims)
        groups_claim = claim_at(claims, self.settings.oidc_groups_claim)
        if groups_claim is None or not (claims.get("email") and claims.get("name")):
            userinfo = dict(await self.client.userinfo(token=token))
            if userinfo.get("sub") != claims["sub"]:
                raise SignInError("userinfo is about another subject")
            if groups_claim is None:
                groups_claim = claim_at(userinfo, self.settings.oidc_groups_claim)
            claims = userinfo | claims
        return identity_of(claims), groups_of(groups_claim), token.get("id_token")

    async def logout_url(self, id_token: str | None) -> str | None:
        """The provider's end-session URL (RP-initiated logout), or None if it has none."""
        try:
            endpoint = (await self.metadata()).get("end_session_endpoint")
        except Exception:  # the provider is unreachable: the local session is ended anyway
            return None
        if not endpoint:
            return None
        params = {
            "post_logout_redirect_uri": self.settings.ui_base_url + "/ui/",
            "client_id": self.settings.oidc_client_id or "",
            "state": secrets.token_urlsafe(16),
        }
        if id_token:
            params["id_token_hint"] = id_token
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"
