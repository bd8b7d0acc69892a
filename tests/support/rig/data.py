"""The rig's data: mailing bodies for the API, and what the database says about a mailing
afterwards. One SQL text per question, run by a sync or an async psycopg connection alike (the
tests use the first, the benchmarks the second). Clients are seeded by tests/support/rows.py
(`seed_clients`, `aseed_clients`, importable from here too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.support.rows import aseed_clients, seed_clients

__all__ = ["aseed_clients", "seed_clients"]

TERMINAL = frozenset({"sent", "failed", "expired", "cancelled", "delivered", "undelivered"})

# A mailing's messages; its test sends (`is_test`) are not among them, as for its counters.
COUNTS_BY_MESSAGES = (
    "SELECT status, count(*) FROM message WHERE mailing_id = %s AND NOT is_test GROUP BY status"
)
COUNTS_BY_COUNTERS = "SELECT status, count FROM message_count WHERE mailing_id = %s AND count <> 0"
MAILING_ROW = "SELECT * FROM mailing WHERE id = %s"


def mailing_body(
    *,
    starts_in: float = -1.0,
    ends_in: float = 3600.0,
    text: str = "Hello",
    tags: list[str] | None = None,
    operator_codes: list[str] | None = None,
    send_window: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `POST /mailings` body: running from `starts_in` seconds to `ends_in` from now."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "start_at": (now + timedelta(seconds=starts_in)).isoformat(),
        "end_at": (now + timedelta(seconds=ends_in)).isoformat(),
        "text": text,
        "filter": {"operator_codes": operator_codes or [], "tags": tags or []},
    }
    if send_window is not None:
        body["send_window"] = send_window
    return body


def message_counts(conn: psycopg.Connection[Any], mailing_id: int) -> dict[str, int]:
    """Status -> messages, by a GROUP BY over the messages (the truth)."""
    return {s: int(n) for s, n in conn.execute(COUNTS_BY_MESSAGES, [mailing_id]).fetchall()}


def counter_counts(conn: psycopg.Connection[Any], mailing_id: int) -> dict[str, int]:
    """Status -> messages, from the per-mailing counters (what the stats endpoint reads)."""
    return {s: int(n) for s, n in conn.execute(COUNTS_BY_COUNTERS, [mailing_id]).fetchall()}


async def acounter_counts(conn: psycopg.AsyncConnection[Any], mailing_id: int) -> dict[str, int]:
    cursor = await conn.execute(COUNTS_BY_COUNTERS, [mailing_id])
    return {s: int(n) for s, n in await cursor.fetchall()}


def mailing_row(conn: psycopg.Connection[Any], mailing_id: int) -> dict[str, Any]:
    cursor = conn.execute(MAILING_ROW, [mailing_id])
    names = [d.name for d in cursor.description or []]
    row = cursor.fetchone()
    assert row is not None, f"no mailing {mailing_id}"
    return dict(zip(names, row, strict=True))


def all_terminal(counts: dict[str, int], expected_total: int) -> bool:
    total = sum(counts.values())
    return total == expected_total and sum(counts.get(s, 0) for s in TERMINAL) == total
