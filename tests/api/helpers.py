"""Helpers for the admin API tests: request bodies, seeding (tests/support/rows.py) and
database snapshots."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.support.rows import insert_clients, insert_mailing, insert_messages, phone

# The row factories, under the names the API and console tests import them by.
__all__ = ["insert_clients", "insert_mailing", "insert_messages", "phone"]

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
    "delivered",
    "undelivered",
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
