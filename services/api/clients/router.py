from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Response, status

from services.api.clients import service
from services.api.clients.schemas import (
    ClientCreate,
    ClientOut,
    ClientPatch,
    OperatorCode,
    Phone,
    Tag,
    set_normalizing_phones,
)
from services.api.deps import AdminActorDep, SessionDep
from services.api.openapi import api_router
from services.api.pagination import AfterId, Limit, ResourceId, next_after_id
from services.api.schemas import Page

router = api_router(prefix="/clients", tags=["clients"])


async def _normalize_phone(
    normalize_phone: Annotated[
        bool,
        Query(
            description="Accept the phone as people write it (+7 (916) 123-45-67,"
            " 8 916 123 45 67, 89161234567) and store it as 79161234567; a phone that stays"
            " ambiguous is 422 with the reason. Off: only 7 followed by 10 digits."
        ),
    ] = False,
) -> bool:
    # Runs before the body is validated (FastAPI solves dependencies first), in its context.
    set_normalizing_phones(normalize_phone)
    return normalize_phone


NormalizePhone = Annotated[bool, Depends(_normalize_phone)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClientOut)
async def create_client(
    _normalize: NormalizePhone, body: ClientCreate, session: SessionDep, actor: AdminActorDep
) -> ClientOut:
    """Add a client to the directory. A phone already used by a live client is 409."""
    return ClientOut.model_validate(await service.create_client(session, body, actor=actor))


@router.get("", response_model=Page[ClientOut])
async def list_clients(
    session: SessionDep,
    limit: Limit = 100,
    after_id: AfterId = 0,
    operator_code: Annotated[OperatorCode | None, Query()] = None,
    tag: Annotated[Tag | None, Query()] = None,
    phone: Annotated[Phone | None, Query()] = None,
) -> Page[ClientOut]:
    """Live clients in id order, optionally filtered; keyset-paginated with `after_id`."""
    clients = await service.list_clients(
        session, limit=limit, after_id=after_id, operator_code=operator_code, tag=tag, phone=phone
    )
    return Page[ClientOut](
        items=[ClientOut.model_validate(c) for c in clients],
        next_after_id=next_after_id([c.id for c in clients], limit),
    )


@router.get("/{client_id}", response_model=ClientOut)
async def get_client(client_id: ResourceId, session: SessionDep) -> ClientOut:
    return ClientOut.model_validate(await service.get_client(session, client_id))


@router.patch("/{client_id}", response_model=ClientOut)
async def patch_client(
    client_id: ResourceId,
    _normalize: NormalizePhone,
    body: ClientPatch,
    session: SessionDep,
    actor: AdminActorDep,
) -> ClientOut:
    """Change the given attributes. The operator code is not re-derived from a new phone."""
    return ClientOut.model_validate(
        await service.patch_client(session, client_id, body, actor=actor)
    )


@router.put("/{client_id}", response_model=ClientOut)
async def replace_client(
    client_id: ResourceId,
    _normalize: NormalizePhone,
    body: ClientCreate,
    session: SessionDep,
    actor: AdminActorDep,
) -> ClientOut:
    """Replace every attribute; a missing operator code is derived from the phone."""
    return ClientOut.model_validate(
        await service.replace_client(session, client_id, body, actor=actor)
    )


@router.delete("/{client_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_client(
    client_id: ResourceId, session: SessionDep, actor: AdminActorDep
) -> Response:
    """Remove the client; its undelivered messages are cancelled, its history is kept."""
    await service.delete_client(session, client_id, actor=actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
