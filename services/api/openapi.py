"""The spec as generated clients read it: stable operation ids and the role each one needs.

Operation ids are the handlers' names (`create_client`, `get_mailing_stats`), so they stay the
same whatever the path or method. The role comes from the handler's dependencies: one that
takes an `AdminActorDep` needs an admin token; every other `/api/v1` operation a viewer's.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.api.auth import admin_actor
from services.api.principal import Role
from services.api.schemas import ErrorResponse

FORBIDDEN_RESPONSE = {
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


def _needs_admin(dependant: Dependant) -> bool:
    return any(dep.call is admin_actor or _needs_admin(dep) for dep in dependant.dependencies)


def required_role(route: APIRoute) -> Role | None:
    """The role an `/api/v1` operation needs; None for public ones (health, metrics)."""
    if not route.path.startswith("/api/"):
        return None
    return Role.ADMIN if _needs_admin(route.dependant) else Role.VIEWER


def annotate_roles(app: FastAPI) -> None:
    """Mark each operation with `x-required-role`, a line in its description and, where a
    viewer is refused, the 403 answer."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or (role := required_role(route)) is None:
            continue
        route.openapi_extra = {**(route.openapi_extra or {}), "x-required-role": role.value}
        note = (
            "Needs an **admin** token (a viewer token is 403)."
            if role is Role.ADMIN
            else "Needs any token (**viewer** or admin)."
        )
        route.description = f"{route.description}\n\n{note}".strip()
        if role is Role.ADMIN:
            route.responses = {**route.responses, 403: FORBIDDEN_RESPONSE}
