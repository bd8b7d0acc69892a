"""The spec as generated clients read it: stable operation ids and the role each one needs.

Operation ids are the handlers' names (`create_client`, `get_mailing_stats`), so they stay the
same whatever the path or method. The role comes from the handler's parameters: one that takes
an `AdminActorDep` needs an admin token (a viewer is 403); every other operation of an API
router (`api_router`) needs any token. Routers made by `api_router` mark each operation with
`x-required-role`, a line in its description and, for admin operations, the 403 answer.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, params
from fastapi.routing import APIRoute

from services.api.auth import admin_actor
from services.api.deps import TokenRequired
from services.api.principal import Role
from services.api.schemas import ERROR_RESPONSES, ErrorResponse

FORBIDDEN_RESPONSE: dict[str, Any] = {
    "model": ErrorResponse,
    "description": "The token's role may not do this (a viewer token may only read)",
    "content": {
        "application/json": {
            "example": {"detail": "token 'reports' has the role viewer: it may only read"}
        }
    },
}


def operation_id(route: APIRoute) -> str:
    return route.name


def _is_admin_dependency(value: object) -> bool:
    return isinstance(value, params.Depends) and value.dependency is admin_actor


def required_role(
    endpoint: Callable[..., Any], dependencies: Sequence[params.Depends] | None = None
) -> Role:
    """Admin if the handler (or its route) depends on `admin_actor`, else viewer."""
    hints = typing.get_type_hints(endpoint, include_extras=True)
    for name, parameter in inspect.signature(endpoint).parameters.items():
        metadata = typing.get_args(hints.get(name))[1:]
        if any(_is_admin_dependency(m) for m in (*metadata, parameter.default)):
            return Role.ADMIN
    if any(_is_admin_dependency(d) for d in dependencies or ()):
        return Role.ADMIN
    return Role.VIEWER


class RoleRoute(APIRoute):
    """An API route that documents the role it needs."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        role = required_role(endpoint, kwargs.get("dependencies"))
        note = (
            "Needs an **admin** token (a viewer token is 403)."
            if role is Role.ADMIN
            else "Needs any token (**viewer** or admin)."
        )
        description = kwargs.get("description") or inspect.cleandoc(endpoint.__doc__ or "")
        kwargs["description"] = f"{description}\n\n{note}".strip()
        kwargs["openapi_extra"] = {**(kwargs.get("openapi_extra") or {}), "x-required-role": role}
        if role is Role.ADMIN:
            kwargs["responses"] = {**(kwargs.get("responses") or {}), 403: FORBIDDEN_RESPONSE}
        super().__init__(path, endpoint, **kwargs)


def api_router(*, prefix: str, tags: list[str | Any]) -> APIRouter:
    """A router of `/api/v1` operations: every one needs a token and documents its role and
    errors. Writes take `actor: AdminActorDep`; reads need nothing more."""
    return APIRouter(
        prefix=prefix,
        tags=tags,
        dependencies=[TokenRequired],
        responses=ERROR_RESPONSES,
        route_class=RoleRoute,
    )
