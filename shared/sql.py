"""SQL for the send-window rules of `shared.domain.send_window`, evaluated in the database so
the fan-out and the sender's claim decide per row without a round trip to Python.

The arguments are SQL expressions (column references or bind parameters).
"""

from __future__ import annotations


def local_now(timezone: str) -> str:
    return f"(now() AT TIME ZONE {timezone})"


def window_open(timezone: str, start: str, end: str) -> str:
    """True when there is no window or the client's local time is inside [start, end)."""
    local = f"{local_now(timezone)}::time"
    return (
        f"({start} IS NULL OR CASE WHEN {start} < {end} "
        f"THEN {local} >= {start} AND {local} < {end} "
        f"ELSE {local} >= {start} OR {local} < {end} END)"
    )


def next_window_open(timezone: str, start: str, end: str) -> str:
    """now() when the window is open, else the next moment the client's local clock reads start."""
    local = local_now(timezone)
    opening_day = f"({local}::date + CASE WHEN {local}::time < {start} THEN 0 ELSE 1 END)"
    return (
        f"CASE WHEN {window_open(timezone, start, end)} THEN now() "
        f"ELSE ({opening_day} + {start}) AT TIME ZONE {timezone} END"
    )


# Opt-out: an opted-out client gets no message. The fan-out leaves them out, the sender's claim
# cancels a message whose client opted out meanwhile (with this reason), the preview does not
# count them. `client` is the client table's alias.
OPTED_OUT_REASON = "opted out"


def client_opted_out(client: str) -> str:
    return f"({client}.opted_out_at IS NOT NULL)"
