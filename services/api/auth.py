"""Bearer-token authentication for the admin API: a token from API_TOKENS becomes an `Actor`.

API_TOKENS is comma-separated. An entry `name:role:token` names the token and gives it the role
`admin` or `viewer` (the token itself may contain `:`); a bare entry without `:` is an admin
token named by its position in the list (`token-1`, `token-2`, ...).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.auth_limit import failed_auth, source_address
from services.api.errors import ApiError
from services.api.observability import request_id_of
from services.api.principal import Actor, Role

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from API_TOKENS: an admin token may change data, a viewer only read",
)


class Unauthorized(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail)


class Forbidden(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: Role
    secret: str = field(repr=False)


def parse_api_tokens(entries: Iterable[str]) -> list[ApiToken]:
    """The API_TOKENS entries as named tokens; a malformed entry is a ValueError (which never
    quotes the entry: it holds a secret)."""
    tokens: list[ApiToken] = []
    for position, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if ":" not in entry:
            tokens.append(ApiToken(f"token-{position}", Role.ADMIN, entry))
            continue
        name, role, secret = [*entry.split(":", 2), "", ""][:3]
        name, role = name.strip(), role.strip()
        if not name or not secret:
            raise ValueError(f"API_TOKENS entry {position}: expected name:role:token")
        if role not in {r.value for r in Role}:
            raise ValueError(f"API_TOKENS entry {position} ({name}): role must be admin or viewer")
        tokens.append(ApiToken(name, Role(role), secret))
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise ValueError("API_TOKENS: two entries have the same name")
    if len({token.secret for token in tokens}) != len(tokens):
        raise ValueError("API_TOKENS: two entries have the same token")
    return tokens


MIN_TOKEN_LENGTH = 32
# Tokens copied from examples and tutorials: refused whatever their length.
PLACEHOLDER_TOKENS = ("change-me", "changeme", "demo-admin-token", "replace-me", "placeholder",
                      "your-token", "secret", "password", "example", "xxxxxxxx")  # fmt: skip
HOW_TO_MAKE_ONE = "make one with `openssl rand -hex 32`"


def weak_tokens(tokens: list[ApiToken]) -> list[str]:
    """Why each weak token is refused, by its name (never the token itself): shorter than
    MIN_TOKEN_LENGTH, a known placeholder, or too few distinct characters to be random."""
    problems = []
    for token in tokens:
        lowered = token.secret.lower()
        if any(word in lowered for word in PLACEHOLDER_TOKENS):
            problems.append(f"{token.name}: a placeholder from an example")
        elif len(token.secret) < MIN_TOKEN_LENGTH:
            problems.append(f"{token.name}: shorter than {MIN_TOKEN_LENGTH} characters")
        elif len(set(token.secret)) < 10:
            problems.append(f"{token.name}: too few distinct characters to be random")
    return problems


def find_token(presented: str, tokens: list[ApiToken]) -> ApiToken | None:
    # Compare against every token, without stopping early, so timing reveals nothing.
    found = None
    for token in tokens:
        if hmac.compare_digest(presented.encode(), token.secret.encode()):
            found = token
    return found


async def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """Who sends this request: any configured token, admin or viewer."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    address = source_address(request)
    limiter = failed_auth(request)
    limiter.check(address, "api_token")
    token = find_token(credentials.credentials, request.app.state.api_tokens)
    if token is None:
        limiter.failed(address, "api_token")
        raise Unauthorized("invalid bearer token")
    return Actor(
        name=token.name,
        role=token.role,
        kind="token",
        request_id=request_id_of(request.scope),
        source=address,
    )


async def admin_actor(actor: Annotated[Actor, Depends(current_actor)]) -> Actor:
    """Who sends this change: an admin token; a viewer token is 403."""
    if not actor.may_change:
        raise Forbidden(f"token {actor.name!r} has the role {actor.role}: it may only read")
    return actor
