"""Opting a client out stops its undelivered messages at once (`cancelled`, "opted out").

A message whose provider request is under way (`sending` with a live lease) is left to its
sender, whose claim and result write settle it; every later claim cancels it
(`services.sender.store.CLAIM` checks `shared.domain.opt_out.opted_out_sql`).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.lifecycle import OPEN, S, sql, sql_in
from shared.domain.opt_out import OPTED_OUT_REASON


def cancel_undelivered_sql(client_ids: str) -> str:
    """An UPDATE of the undelivered messages of the clients the subquery `client_ids` yields."""
    return f"""
        UPDATE message m SET status = {sql(S.CANCELLED)}, last_error = '{OPTED_OUT_REASON}',
            token = NULL, lease_until = NULL, updated_at = now()
        WHERE m.client_id IN ({client_ids})
          AND m.status IN ({sql_in(OPEN)})
          AND (m.status <> {sql(S.SENDING)} OR m.lease_until IS NULL OR m.lease_until <= now())
    """


_CANCEL_ONE = text(cancel_undelivered_sql("CAST(:client_id AS bigint)"))


async def cancel_undelivered(session: AsyncSession, client_id: int) -> int:
    """In the caller's transaction; returns how many messages were cancelled."""
    result = await session.execute(_CANCEL_ONE, {"client_id": client_id})
    return int(result.rowcount)  # type: ignore[attr-defined]
