"""Opting a client out, or deleting it, stops its undelivered messages at once (`cancelled`).

A message whose provider request is under way (`shared.domain.lifecycle.held_by_sender_sql`) is
left to its sender, whose claim and result write settle it; every later claim cancels it
(`services.sender.store.CLAIM` checks the client's opt-out and delete).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# The builder lives in shared.domain.opt_out: an opt-out by SMS reply (shared/replies.py) runs
# the same statement.
from shared.domain.opt_out import cancel_undelivered_sql

_OPT_OUT_ONE = text(cancel_undelivered_sql("CAST(:client_id AS bigint)"))
_DELETE_ONE = text(cancel_undelivered_sql("CAST(:client_id AS bigint)", reason=None))


async def cancel_undelivered(
    session: AsyncSession, client_id: int, *, deleted: bool = False
) -> int:
    """In the caller's transaction; returns how many messages were cancelled. An opt-out
    leaves its reason in `last_error`; a delete keeps the last error there was."""
    result = await session.execute(
        _DELETE_ONE if deleted else _OPT_OUT_ONE, {"client_id": client_id}
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
