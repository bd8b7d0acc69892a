"""The OpenID Connect client (Authlib): authorization code with PKCE S256, state and nonce,
RS256 ID tokens; and the rules that turn the provider's claims into a login and a role."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
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


def failure(exc: Exception) -> str:
    """Why the provider's answer was refused, for the log: the library's error and its short
    description (a claim's name, an OAuth error code), never a token."""
    described = getattr(exc, "description", None) or getattr(exc, "error", None) or str(exc)
    return f"{type(exc).__name__}: {described}"[:200]


class SignInError(Exception):
    """The provider's answer could not be accepted (state, nonce, token, signature...)."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """What a finished sign-in (or a re-check) learnt from the provider."""

    identity: Identity
    groups: set[str]
    id_token: str | None
    # What lets the console ask again later: the refresh token, or else the access token.
    tokens: dict[str, str]


def kept_tokens(token: Mapping[str, Any]) -> dict[str, str]:
    """The one token to keep: the refresh token, or else the access token (for userinfo)."""
    for name in ("refresh_token", "access_token"):
        if token.get(name):
            return {name: str(token[name])}
    return {}


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

    def claims_options(self) -> dict[str, Any]:
        """The ID token's issuer and audience must be ours (Authlib checks `aud` only when
        told, and only `iss` by default)."""
        metadata_issuer = self.client.server_metadata.get("issuer") or self.settings.oidc_issuer
        return {
            "iss": {"essential": True, "values": [metadata_issuer]},
            "aud": {"essential": True, "values": [self.settings.oidc_client_id]},
        }

    async def finish(self, request: Any) -> SignedIn:
        """Exchanges the code (checking state, PKCE, the ID token's signature, issuer,
        audience and nonce) and returns who signed in, their groups and the tokens."""
        await self.metadata()
        token = await self.client.authorize_access_token(
            request, claims_options=self.claims_options()
        )
        claims = token.get("userinfo")
        if not claims:
            raise SignInError("the provider returned no ID token")
        return await self._signed_in(token, dict(claims))

    async def recheck(self, tokens: Mapping[str, str]) -> SignedIn:
        """Asks the provider again who the account is and which groups it has: a refresh
        token grant (its new ID token checked like a sign-in's, but for the nonce), or else
        userinfo with the access token kept at sign-in. The provider refusing either (the
        account disabled, the grant revoked, the token expired) raises OAuthError or
        httpx.HTTPStatusError."""
        await self.metadata()
        if tokens.get("refresh_token"):
            token = await self.client.fetch_access_token(
                grant_type="refresh_token", refresh_token=tokens["refresh_token"]
            )
            if token.get("error"):
                raise SignInError(str(token["error"]))
            claims: dict[str, Any] = {}
            if token.get("id_token"):
                parsed = await self.client.parse_id_token(
                    token, nonce=None, claims_options=self.claims_options()
                )
                claims = dict(parsed)
            kept = kept_tokens(token)
            kept.setdefault("refresh_token", tokens["refresh_token"])  # not rotated
        else:
            token = {"access_token": tokens["access_token"], "token_type": "Bearer"}
            claims, kept = {}, dict(tokens)
        if not claims:
            claims = dict(await self.client.userinfo(token=token))
            if not claims.get("sub"):
                raise SignInError("userinfo named no subject")
        signed_in = await self._signed_in(token, claims)
        return SignedIn(signed_in.identity, signed_in.groups, signed_in.id_token, kept)

    async def _signed_in(self, token: Mapping[str, Any], claims: dict[str, Any]) -> SignedIn:
        groups_claim = claim_at(claims, self.settings.oidc_groups_claim)
        if groups_claim is None or not (claims.get("email") and claims.get("name")):
            userinfo = dict(await self.client.userinfo(token=token))
            if userinfo.get("sub") != claims["sub"]:
                raise SignInError("userinfo is about another subject")
            if groups_claim is None:
                groups_claim = claim_at(userinfo, self.settings.oidc_groups_claim)
            claims = userinfo | claims
        return SignedIn(
            identity_of(claims), groups_of(groups_claim), token.get("id_token"), kept_tokens(token)
        )

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
