"""The client directory: create, read, update and soft-delete clients."""

from __future__ import annotations

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import audit
from services.api.clients import optout
from services.api.clients.schemas import ClientCreate, ClientPatch
from services.api.errors import Conflict, NotFound
from services.api.principal import Actor
from shared.domain.clients import default_operator_code, mask_phone
from shared.models import Client

log = structlog.get_logger("api.clients")

# What the audit log records of a client.
CLIENT_FIELDS = ("phone", "operator_code", "tag", "timezone")


def _duplicate_phone(phone: str) -> Conflict:
    return Conflict(f"a client with phone {phone} already exists")


async def get_client(session: AsyncSession, client_id: int) -> Client:
    client = await session.scalar(
        select(Client).where(Client.id == client_id, Client.deleted_at.is_(None))
    )
    if client is None:
        raise NotFound("client", client_id)
    return client


async def list_clients(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int,
    operator_code: str | None,
    tag: str | None,
    phone: str | None,
) -> list[Client]:
    query = select(Client).where(Client.deleted_at.is_(None), Client.id > after_id)
    if operator_code is not None:
        query = query.where(Client.operator_code == operator_code)
    if tag is not None:
        query = query.where(Client.tag == tag)
    if phone is not None:
        query = query.where(Client.phone == phone)
    return list(await session.scalars(query.order_by(Client.id).limit(limit)))


def _fields(client: Client) -> dict[str, object]:
    return {name: getattr(client, name) for name in CLIENT_FIELDS}


async def create_client(session: AsyncSession, data: ClientCreate, *, actor: Actor) -> Client:
    client = Client(
        phone=data.phone,
        operator_code=data.operator_code or default_operator_code(data.phone),
        tag=data.tag,
        timezone=data.timezone,
        opted_out_at=func.now() if data.opted_out else None,
    )
    session.add(client)
    try:
        await session.flush()
        await audit.record(session, actor, "create", "client", client.id, _fields(client))
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _duplicate_phone(data.phone) from exc
    if data.opted_out:
        await session.refresh(client)  # opted_out_at is the database's now()
    log.info("client created", client_id=client.id, phone=mask_phone(client.phone))
    return client


async def update_client(
    session: AsyncSession,
    client_id: int,
    changes: dict[str, object],
    *,
    actor: Actor,
    action: str = "update",
) -> Client:
    client = await get_client(session, client_id)
    opted_out = changes.pop("opted_out", None)
    changed: dict[str, object] = {
        name: {"old": getattr(client, name), "new": value}
        for name, value in changes.items()
        if getattr(client, name) != value
    }
    for name, value in changes.items():
        setattr(client, name, value)
    client.updated_at = func.now()
    opting_out = opted_out is not None and opted_out != (client.opted_out_at is not None)
    if opting_out:
        changed["opted_out"] = {"old": not opted_out, "new": opted_out}
        client.opted_out_at = func.now() if opted_out else None
    try:
        if opting_out and opted_out:
            # At once, in this transaction; a claim racing it cancels the message too.
            changed["messages_cancelled"] = await optout.cancel_undelivered(session, client_id)
        await audit.record(session, actor, action, "client", client_id, changed)
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _duplicate_phone(str(changes.get("phone"))) from exc
    await session.refresh(client)
    log.info("client updated", client_id=client.id, fields=sorted(changes))
    return client


async def patch_client(
    session: AsyncSession, client_id: int, data: ClientPatch, *, actor: Actor
) -> Client:
    changes = data.model_dump(exclude_unset=True)
    # null for a field means "leave it", like leaving it out; no attribute may become null.
    changes = {name: value for name, value in changes.items() if value is not None}
    return await update_client(session, client_id, changes, actor=actor)


async def replace_client(
    session: AsyncSession, client_id: int, data: ClientCreate, *, actor: Actor
) -> Client:
    return await update_client(
        session,
        client_id,
        {
            "phone": data.phone,
            "operator_code": data.operator_code or default_operator_code(data.phone),
            "tag": data.tag,
            "timezone": data.timezone,
            "opted_out": data.opted_out,
        },
        actor=actor,
        action="replace",
    )


async def delete_client(session: AsyncSession, client_id: int, *, actor: Actor) -> None:
    """Soft delete: the client disappears from the API, its undelivered messages are cancelled
    in the same transaction, and its history stays for the stats of past mailings."""
    client = await get_client(session, client_id)
    client.deleted_at = func.now()
    cancelled = await optout.cancel_undelivered(session, client_id, deleted=True)
    await audit.record(
        session,
        actor,
        "delete",
        "client",
        client_id,
        {"phone": client.phone, "messages_cancelled": cancelled},
    )
    await session.commit()
    log.info("client deleted; undelivered messages cancelled", client_id=client_id)
