"""An api process killed in the middle of a CSV import leaves the directory as it was: during
the upload, and during the upsert (held up on a row lock so it is surely half way)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.support.broker import AMQP_URL, new_namespace
from tests.support.rig.processes import ProcessGroup, ServiceProcess, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

ROWS = 200_000


def csv_lines() -> Iterator[bytes]:
    yield b"phone,tag,timezone\n"
    for n in range(ROWS):
        yield f"7{n:010d},imported,UTC\n".encode()


class Api:
    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self.port = 0
        self.proc: ServiceProcess | None = None

    async def start(self) -> None:
        self.port = free_port()
        self.proc = self.group.start("api", api_port=self.port, api_host="127.0.0.1")

        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.process.poll() is not None:
                raise AssertionError(self.proc.log_tail())
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, timeout=30, message="api ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        )


@pytest.fixture
async def api(clean_db: str, tmp_path: Path) -> AsyncIterator[Api]:
    group = ProcessGroup(
        {
            "DATABASE_URL": database.sqlalchemy_url(clean_db),
            "AMQP_URL": AMQP_URL,
            "AMQP_NAMESPACE": new_namespace(),
            "API_TOKENS": ADMIN_TOKEN,
            "LOG_FORMAT": "json",
            "DB_POOL_SIZE": "3",
        },
        tmp_path,
    )
    runner = Api(group)
    try:
        await runner.start()
        yield runner
    finally:
        group.stop_all()


def directory(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM client ORDER BY id").fetchall()


def seed(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone) VALUES"
        " ('70000000005', '000', 'before', 'Asia/Tokyo'), ('79990000000', '999', 'x', 'UTC')"
    )


async def test_killed_during_the_upload(api: Api, clean_db: str) -> None:
    with database.connect(clean_db) as conn:
        seed(conn)
        before = directory(conn)

        async def upload() -> AsyncIterator[bytes]:
            for n, line in enumerate(csv_lines()):
                if n == ROWS // 2:
                    assert api.proc is not None
                    api.proc.kill()  # SIGKILL half way through the file
                yield line

        async with api.client() as client:
            with pytest.raises(httpx.HTTPError):
                await client.post(
                    "/clients/imports", content=upload(), headers={"Content-Type": "text/csv"}
                )
        assert directory(conn) == before
        assert conn.execute("SELECT count(*) FROM client_import").fetchone() == (0,)


async def test_killed_during_the_upsert(api: Api, clean_db: str) -> None:
    with database.connect(clean_db) as conn:
        seed(conn)
        before = directory(conn)
        # A transaction of ours holds the row lock of a client the import updates, so the
        # import is surely stuck half way (its staging table full, its UPDATE waiting).
        with database.connect(clean_db) as blocker:
            blocker.autocommit = False
            blocker.execute("SELECT * FROM client WHERE phone = '70000000005' FOR UPDATE")
            async with api.client() as client:
                response = await client.post(
                    "/clients/imports?on_conflict=update",
                    content=b"".join(csv_lines()),
                    headers={"Content-Type": "text/csv"},
                )
                assert response.status_code == 202, response.text
                import_id = response.json()["id"]

                async def waiting_on_our_lock() -> bool:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query LIKE '%%UPDATE client c%%'"
                    ).fetchone()
                    return bool(row and row[0])

                await wait_until(waiting_on_our_lock, timeout=60, message="the import's UPDATE")
                state = (await client.get(f"/clients/imports/{import_id}")).json()
                assert state["status"] == "running"
            assert api.proc is not None
            api.proc.kill()
            blocker.rollback()  # the import's UPDATE goes on, then finds its client gone

        async def import_backend_gone() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                (import_id,),
            ).fetchone()
            return row == (0,)

        await wait_until(import_backend_gone, timeout=60, message="the import's session ended")
        assert directory(conn) == before
        assert conn.execute("SELECT count(*) FROM client_import_rejection").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'import_clients'"
        ).fetchone() == (0,)

        await api.start()  # a fresh api reports the dead import as failed
        async with api.client() as client:
            state = (await client.get(f"/clients/imports/{import_id}")).json()
        assert state["status"] == "failed", state
        assert "nothing was changed" in state["error"]
