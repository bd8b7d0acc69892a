"""Opt-out: an opted-out client gets no message.

The fan-out leaves opted-out clients out, the sender's claim cancels a message whose client
opted out meanwhile (with `OPTED_OUT_REASON`), opting out cancels a client's undelivered
messages at once (services/api/clients/optout.py), and the preview does not count them.
"""

from __future__ import annotations

from shared.domain.lifecycle import S, open_not_held_sql, sql

OPTED_OUT_REASON = "opted out"


def opted_out_sql(client: str) -> str:
    """True for an opted-out client; `client` is the client table's alias."""
    return f"({client}.opted_out_at IS NOT NULL)"


def cancel_undelivered_sql(client_ids: str, *, reason: str | None = OPTED_OUT_REASON) -> str:
    """An UPDATE of the undelivered messages of the clients the subquery `client_ids` yields;
    `reason` (an SQL literal's text, or None to keep the last error) goes to `last_error`."""
    last_error = f"'{reason}'" if reason is not None else "m.last_error"
    return f"""
        UPDATE message m SET status = {sql(S.CANCELLED)}, last_error = {last_error},
            token = NULL, lease_until = NULL, updated_at = now()
        WHERE m.client_id IN ({client_ids}) AND {open_not_held_sql("m")}
    """
