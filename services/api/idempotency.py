"""The Idempotency-Key of a create (mailings, imports): a retry with the same key and the same
request answers with what the first one made, never a second; another request under a used
key is refused (422). The key's row keeps a fingerprint of the request it came with."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Header
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.errors import Unprocessable
from shared.models import Base

RowT = TypeVar("RowT", bound=Base)


def key_header(description: str) -> Any:
    """The `Idempotency-Key` header's parameter."""
    return Header(min_length=1, max_length=255, pattern=r"^[^\x00]+$", description=description)


async def by_key(session: AsyncSession, model: type[RowT], key: str) -> RowT | None:
    """The row a request with this key made before, if any."""
    return await session.scalar(select(model).where(model.__table__.c.idempotency_key == key))


def replayed(row: RowT, fingerprint: str | None, *, fingerprint_column: str, what: str) -> RowT:
    """`row` again, for a retry of the request that made it; another request under its key
    is refused (`what` says what must be the same: "request body", "file or on_conflict")."""
    if getattr(row, fingerprint_column) != fingerprint:
        raise Unprocessable(f"Idempotency-Key was already used with a different {what}")
    return row
