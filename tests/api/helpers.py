"""Helpers for the admin API tests: request bodies, SQL seeding and database snapshots."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

TABLES = ("client", "mailing", "message", "message_count")
MESSAGE_STATUSES = (
    "pending",
    "queued",
    "sending",
    "sent",
    "retrying",
    "failed",
    "expired",
    "cancelled",
)
MAILING_STATUSES = ("scheduled", "awaiting_approval", "running", "paused", "completed", "cancelled")


def iso(moment: datetime) -> str:
    return moment.isoformat()


def in_hours(hours: float) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def mailing_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body: starts in an hour, ends in a day."""
    body: dict[str, Any] = {
        "start_at": iso(in_hours(1)),
        "end_at": iso(in_hours(24)),
        "text": "Hello",
    }
    body.update(overrides)
    return body


def phone(n: int) -> str:
    return f"7912{n:07d}"


async def create_client(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"phone": "79123456789", "timezone": "Europe/Moscow"} | fields
    response = await api.post("/clients", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def create_mailing(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    """The created mailing as a read returns it (its pre-send check, `check`, left out)."""
    response = await api.post("/mailings", json=mailing_body(**overrides))
    assert response.status_code == 201, response.text
    body = response.json()
    assert "recipients" in body.pop("check"), body
    return body  # type: ignore[no-any-return]


def insert_clients(
    conn: psycopg.Connection,
    count: int,
    *,
    first: int = 0,
    operator_code: str | None = None,
    tag: str = "",
    timezone: str = "UTC",
) -> list[int]:
    ids = []
    for n in range(first, first + count):
        p = phone(n)
        row = conn.execute(
            "INSERT INTO client (phone, operator_code, tag, timezone) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (p, operator_code or p[1:4], tag, timezone),
        ).fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


def insert_mailing(conn: psycopg.Connection, *, status: str = "scheduled", text: str = "x") -> int:
    started = status in ("running", "paused", "completed")
    row = conn.execute(
        "INSERT INTO mailing (start_at, end_at, text, status, started_at)"
        " VALUES (now() - interval '1 hour', now() + interval '1 day', %s, %s,"
        " CASE WHEN %s THEN now() END) RETURNING id",
        (text, status, started),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_messages(
    conn: psycopg.Connection, mailing_id: int, client_ids: Sequence[int], status: str = "pending"
) -> list[int]:
    """One multi-row INSERT (one statement) of messages in the given status."""
    rows = conn.execute(
        "INSERT INTO message (mailing_id, client_id, status)"
        " SELECT %s, c, %s FROM unnest(%s::bigint[]) AS c ORDER BY c RETURNING id",
        (mailing_id, status, list(client_ids)),
    ).fetchall()
    return sorted(r[0] for r in rows)


def set_mailing(conn: psycopg.Connection, mailing_id: int, **values: Any) -> None:
    """Simulate the scheduler: set mailing columns directly (values may be SQL via `sql:`)."""
    assignments, params = [], []
    for column, value in values.items():
        if isinstance(value, str) and value.startswith("sql:"):
            assignments.append(f"{column} = {value[4:]}")
        else:
            assignments.append(f"{column} = %s")
            params.append(value)
    conn.execute(
        f"UPDATE mailing SET {', '.join(assignments)} WHERE id = %s", (*params, mailing_id)
    )


def start_mailing(conn: psycopg.Connection, mailing_id: int, status: str = "running") -> None:
    set_mailing(conn, mailing_id, status=status, started_at="sql:now()")


def message_statuses(conn: psycopg.Connection, ids: Sequence[int]) -> list[str]:
    rows = conn.execute(
        "SELECT status FROM message WHERE id = ANY(%s) ORDER BY id", (list(ids),)
    ).fetchall()
    return [r[0] for r in rows]


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        for table in TABLES
    }


def db_state(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: equal snapshots mean nothing changed."""
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() for table in TABLES
    }


@contextmanager
def unchanged(conn: psycopg.Connection) -> Iterator[None]:
    """Assert that the block leaves every table exactly as it found it."""
    before = db_state(conn)
    yield
    after = db_state(conn)
    for table in TABLES:
        assert after[table] == before[table], f"table {table} changed"


def counter_rows(conn: psycopg.Connection) -> dict[tuple[int, str], int]:
    """message_count without zero rows (a counter may stay behind at 0)."""
    rows = conn.execute(
        "SELECT mailing_id, status, count FROM message_count WHERE count <> 0"
    ).fetchall()
    return {(m, s): c for m, s, c in rows}


def grouped_rows(conn: psycopg.Connection) -> dict[tuple[int, str], int]:
    rows = conn.execute("SELECT mailing_id, status, count(*) FROM message GROUP BY 1, 2").fetchall()
    return {(m, s): c for m, s, c in rows}


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """The response is a JSON error with the status and a detail mentioning every fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    for fragment in fragments:
        assert fragment in body["detail"], (fragment, body["detail"])
    return body  # type: ignore[no-any-return]
