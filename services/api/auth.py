"""Bearer-token authentication for the admin API."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="A token listed in API_TOKENS")


class Unauthorized(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail)


def token_is_accepted(presented: str, accepted: list[str]) -> bool:
    # Compare against every token, without stopping early, so timing reveals nothing.
    ok = False
    for token in accepted:
        ok |= hmac.compare_digest(presented.encode(), token.encode())
    return ok


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    if not token_is_accepted(credentials.credentials, request.app.state.api_tokens):
        raise Unauthorized("invalid bearer token")
