"""Rows written straight into a test database, the one set of factories every kit uses:
clients (numbered, one by the id sequence, or in bulk for sizes), mailings and messages.
Times are relative to the database's clock (`now()`), as the worker SQL reads them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg


def phone(n: int) -> str:
    """The phone of the n-th numbered client (`insert_clients`)."""
    return f"7912{n:07d}"


def insert_clients(
    conn: psycopg.Connection[Any],
    count: int,
    *,
    first: int = 0,
    operator_code: str | None = None,
    tag: str = "",
    timezone: str = "UTC",
) -> list[int]:
    """Clients `phone(first)`.. in one statement; the operator code is the phone's (912)
    unless given. Their ids, in phone order."""
    rows = conn.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone)"
        " SELECT '7912' || lpad(g::text, 7, '0'), coalesce(%s, '912'), %s, %s"
        " FROM generate_series(%s::bigint, %s::bigint) AS g ORDER BY g RETURNING id",
        (operator_code, tag, timezone, first, first + count - 1),
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def insert_client(conn: psycopg.Connection[Any], *, timezone: str = "UTC") -> int:
    """One client whose phone comes from the id sequence (never collides)."""
    row = conn.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone)"
        " VALUES ('79' || lpad(nextval('client_id_seq')::text, 9, '0'), '900', '', %s)"
        " RETURNING id",
        [timezone],
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_mailing(
    conn: psycopg.Connection[Any],
    *,
    status: str = "scheduled",
    text: str = "x",
    starts_in_s: float = -3600.0,
    ends_in_s: float = 86_400.0,
    started: bool | None = None,
    fanout_done: bool = False,
    window_sql: str = "NULL, NULL",
) -> int:
    """A mailing `status`, started (started_at now) if its status says so unless `started`
    is given; `window_sql` is the send window's two SQL time expressions."""
    if started is None:
        started = status in ("running", "paused", "completed")
    row = conn.execute(
        "INSERT INTO mailing (start_at, end_at, text, status, started_at, fanout_done_at,"
        " send_window_start, send_window_end)"
        " VALUES (now() + make_interval(secs => %s), now() + make_interval(secs => %s), %s, %s,"
        f" CASE WHEN %s THEN now() END, CASE WHEN %s THEN now() END, {window_sql})"
        " RETURNING id",
        (starts_in_s, ends_in_s, text, status, started, fanout_done),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_messages(
    conn: psycopg.Connection[Any],
    mailing_id: int,
    client_ids: Sequence[int],
    status: str = "pending",
) -> list[int]:
    """One multi-row INSERT (one statement) of messages in the given status."""
    rows = conn.execute(
        "INSERT INTO message (mailing_id, client_id, status)"
        " SELECT %s, c, %s FROM unnest(%s::bigint[]) AS c ORDER BY c RETURNING id",
        (mailing_id, status, list(client_ids)),
    ).fetchall()
    return sorted(r[0] for r in rows)


def insert_message(
    conn: psycopg.Connection[Any],
    mailing_id: int,
    client_id: int,
    *,
    status: str = "pending",
    token: int | None = None,
    lease_in_s: float | None = None,
    not_before_in_s: float = 0,
    attempts: int = 0,
) -> int:
    """One message as a worker left it: its lease and not_before relative to now."""
    row = conn.execute(
        "INSERT INTO message (mailing_id, client_id, status, token, lease_until,"
        " not_before, attempts) VALUES (%s, %s, %s, %s,"
        " now() + make_interval(secs => %s), now() + make_interval(secs => %s), %s)"
        " RETURNING id",
        [mailing_id, client_id, status, token, lease_in_s, not_before_in_s, attempts],
    ).fetchone()
    assert row is not None
    return int(row[0])


# Bulk clients for sizes (the rig, the benchmarks): phones are `prefix` + the 9-digit sequence
# number, so `first..first+count-1` never collide; the first `tagged` of them get `tag`, the
# others `other_tag`.
SEED_CLIENTS = """
INSERT INTO client (phone, operator_code, tag, timezone)
SELECT %(prefix)s || lpad(g::text, 9, '0'), %(operator)s,
       CASE WHEN g < %(first)s + %(tagged)s THEN %(tag)s ELSE %(other_tag)s END, %(timezone)s
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""


def seed_params(
    count: int,
    *,
    tag: str = "",
    timezone: str = "UTC",
    first: int = 1,
    operator_code: str = "900",
    phone_prefix: str = "79",
    tagged: int | None = None,
    other_tag: str = "",
) -> dict[str, Any]:
    """`tagged=None`: every seeded client gets `tag`."""
    return {
        "prefix": phone_prefix,
        "operator": operator_code,
        "tag": tag,
        "other_tag": other_tag,
        "tagged": count if tagged is None else tagged,
        "timezone": timezone,
        "first": first,
        "last": first + count - 1,
    }


def seed_clients(conn: psycopg.Connection[Any], count: int, **options: Any) -> float:
    """Bulk insert (see `seed_params`); seconds it took."""
    started = time.monotonic()
    conn.execute(SEED_CLIENTS, seed_params(count, **options))
    return time.monotonic() - started


async def aseed_clients(
    conn: psycopg.AsyncConnection[Any], count: int, *, analyze: bool = False, **options: Any
) -> float:
    started = time.monotonic()
    await conn.execute(SEED_CLIENTS, seed_params(count, **options))
    if analyze:
        await conn.execute("VACUUM ANALYZE client")
    return time.monotonic() - started
