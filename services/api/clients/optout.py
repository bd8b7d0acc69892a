"""Opting a client out, or deleting it, stops its undelivered messages at once (`cancelled`).

A message whose provider request is under way (`shared.domain.lifecycle.held_by_sender_sql`) is
left to its sender, whose claim and result write settle it; every later claim cancels it
(`services.sender.store.CLAIM` checks the client's opt-out and delete).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.lifecycle import S, open_not_held_sql, sql
from shared.domain.opt_out import OPTED_OUT_REASON


def cancel_undelivered_sql(client_ids: str, *, reason: str | None = OPTED_OUT_REASON) -> str:
    """An UPDATE of the undelivered messages of the clients the subquery `client_ids` yields;
    `reason` (an SQL literal's text, or None to keep the last error) goes to `last_error`."""
    last_error = f"'{reason}'" if reason is not None else "m.last_error"
    return f"""
        UPDATE message m SET status = {sql(S.CANCELLED)}, last_error = {last_error},
            token = NULL, lease_until = NULL, updated_at = now()
        WHERE m.client_id IN ({client_ids}) AND {open_not_held_sql("m")}
    """


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
