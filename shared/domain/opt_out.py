"""Opt-out: an opted-out client gets no message.

The fan-out leaves opted-out clients out, the sender's claim cancels a message whose client
opted out meanwhile (with `OPTED_OUT_REASON`), opting out cancels a client's undelivered
messages at once (services/api/clients/optout.py), and the preview does not count them.
"""

from __future__ import annotations

OPTED_OUT_REASON = "opted out"


def opted_out_sql(client: str) -> str:
    """True for an opted-out client; `client` is the client table's alias."""
    return f"({client}.opted_out_at IS NOT NULL)"
