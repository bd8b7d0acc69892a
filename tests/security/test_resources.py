"""Resources one user can exhaust: connections held by slow exports, an unfinished CSV line
growing with the upload, a console upload spooled to /tmp."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import starlette.formparsers

from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN
from tests.security.conftest import peak_rss_bytes
from tests.support import database
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

MB = 1024 * 1024
SLOW_EXPORTS = 12
POOL = 10


def seed_clients(db_name: str, count: int, tag: str = "bulk") -> None:
    with database.connect(db_name) as conn:
        conn.execute(
            "INSERT INTO client (phone, operator_code, tag, timezone)"
            " SELECT '79' || lpad(g::text, 9, '0'), '900', %s, 'Europe/Moscow'"
            " FROM generate_series(1, %s) g",
            (tag, count),
        )


async def open_slow_export(port: int) -> tuple[bytes, bytes, asyncio.StreamWriter]:
    """An export whose reader stops after the headers: a tiny receive buffer, never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(
        b"GET /api/v1/clients/export HTTP/1.1\r\nHost: api\r\n"
        + f"Authorization: Bearer {VIEWER_TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status = head.split(b" ", 2)[1]
    return status, head, writer


async def copies_running(db_name: str) -> int:
    with database.connect(db_name) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'COPY (%%'"
            " AND state = 'active'",
            (db_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_twelve_slow_exports_leave_readyz_and_writes_answering(
    api_process: ServiceProcess, clean_db: str
) -> None:
    seed_clients(clean_db, 80_000)  # ~9 MB a file: more than the sockets' buffers hold
    opened = await asyncio.gather(
        *(open_slow_export(api_process.port) for _ in range(SLOW_EXPORTS))
    )
    try:
        statuses = [status for status, _, _ in opened]
        streaming = statuses.count(b"200")
        refused = [head for status, head, _ in opened if status == b"429"]
        # Every export that got its 200 holds a connection (up to the pool): wait for them.
        await wait_until(
            lambda: _at_least(clean_db, min(streaming, POOL)), timeout=20, message="exports"
        )
        async with httpx.AsyncClient(base_url=api_process.url, timeout=1.0) as client:
            ready = await client.get("/readyz")
            created = await client.post(
                "/api/v1/clients",
                json={"phone": "79990000001", "tag": "t", "timezone": "UTC"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert ready.status_code == 200, ready.text
        assert created.status_code == 201, created.text
        assert 0 < streaming < POOL, statuses
        assert refused and all(b"retry-after:" in head.lower() for head in refused), statuses
    finally:
        for _, _, writer in opened:
            writer.close()
    # The slots come back once the readers are gone.
    async with httpx.AsyncClient(base_url=api_process.url, timeout=30) as client:

        async def export_answers() -> bool:
            response = await client.get(
                "/api/v1/clients/export",
                params={"tag": "none"},
                headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
            )
            return response.status_code == 200

        await wait_until(export_answers, timeout=30, message="a slot free again")

    # Each export cut short by its reader still left its audit entry.
    async def cut_exports_recorded() -> bool:
        with database.connect(clean_db) as conn:
            row = conn.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'export_clients'"
                " AND changes->>'completed' = 'false'"
            ).fetchone()
        return row is not None and row[0] == streaming

    await wait_until(cut_exports_recorded, timeout=30, message="the cut exports' audit entries")


async def _at_least(db_name: str, count: int) -> bool:
    return await copies_running(db_name) >= count


async def _chunks(data: bytes, size: int = MB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _repeat(piece: bytes, total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


async def test_a_50_mb_file_without_line_ends_is_refused_in_flat_memory(
    api_process: ServiceProcess, clean_db: str
) -> None:
    before = peak_rss_bytes(api_process.pid)
    async with httpx.AsyncClient(base_url=api_process.url, timeout=300) as client:
        response = await client.post(
            "/api/v1/clients/imports",
            content=_repeat(b"7" * MB, 50 * MB),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "text/csv"},
        )
    assert response.status_code == 422, response.text
    assert "line 1 is longer than 8192 characters" in response.json()["detail"]
    peak = peak_rss_bytes(api_process.pid)
    assert peak < 250 * MB, peak
    assert peak - before < 25 * MB, (before, peak)  # under half the file: nothing is buffered


async def test_a_cr_only_file_imports_correctly(api_process: ServiceProcess, clean_db: str) -> None:
    # 2 MB (about 70,000 clients) rather than 50 MB keeps the import to seconds; the
    # line-splitting is the same whatever the size, and memory is checked above at 50 MB.
    rows = 70_000
    data = b"phone,tag,timezone\r" + b"".join(
        b"79%09d,mac,Europe/Moscow\r" % n for n in range(rows)
    )
    before = peak_rss_bytes(api_process.pid)
    async with httpx.AsyncClient(
        base_url=api_process.url, timeout=120, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as client:
        started = await client.post(
            "/api/v1/clients/imports", content=_chunks(data), headers={"Content-Type": "text/csv"}
        )
        assert started.status_code == 202, started.text
        result: dict[str, Any] = {}

        async def done() -> bool:
            result.update(
                (await client.get(f"/api/v1/clients/imports/{started.json()['id']}")).json()
            )
            return result["status"] != "running"

        await wait_until(done, timeout=120, message="import finished")
    assert result["status"] == "done", result
    assert (result["rows"], result["created"], result["rejected"]) == (rows, rows, 0)
    with database.connect(clean_db) as conn:
        tags = conn.execute("SELECT DISTINCT tag, timezone FROM client").fetchall()
    assert tags == [("mac", "Europe/Moscow")]
    peak = peak_rss_bytes(api_process.pid)
    assert peak < 250 * MB and peak - before < 25 * MB, (before, peak)


async def test_a_console_upload_is_streamed_not_spooled(
    console_client: ConsoleClient,
    console_app: Any,
    clean_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spooled: list[object] = []

    class Recording(starlette.formparsers.SpooledTemporaryFile):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            spooled.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", Recording)
    admin = await console_client("admin")
    rows = 40_000  # about 1.2 MB: past Starlette's 1 MB in-memory spool
    data = b"phone,tag,timezone\n" + b"".join(b"79%09d,ui,UTC\n" % n for n in range(rows))
    token = admin.csrf_token  # type: ignore[attr-defined]
    # Without JavaScript: the token is the form's field before the file.
    uploaded = await admin.post(
        "/ui/imports",
        data={"csrf_token": token, "on_conflict": "skip"},
        files={"file": ("clients.csv", data, "text/csv")},
    )
    assert uploaded.status_code == 303, uploaded.text
    # htmx: the token in the header.
    again = await admin.post(
        "/ui/imports",
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
        data={"on_conflict": "update"},
        files={"file": ("clients.csv", data, "text/csv")},
    )
    assert again.status_code == 204, again.text
    await console_app.state.import_tasks.wait()
    assert spooled == []
    # Without the token, nothing is imported.
    forged = await admin.post(
        "/ui/imports",
        data={"on_conflict": "skip"},
        files={"file": ("clients.csv", b"phone,tag,timezone\n79990000009,x,UTC\n", "text/csv")},
    )
    assert forged.status_code == 403
    with database.connect(clean_db) as conn:
        row = conn.execute("SELECT count(*) FROM client").fetchone()
        imports = conn.execute("SELECT count(*) FROM client_import").fetchone()
    assert row is not None and row[0] == rows
    assert imports is not None and imports[0] == 2


def test_lf_crlf_and_cr_files_read_the_same_however_chunked() -> None:
    from services.api.imports.csv_rows import CsvRows

    def read(data: bytes, cut: int) -> list[tuple[object, ...]]:
        reader = CsvRows()
        found = [*reader.feed(data[:cut]), *reader.feed(data[cut:]), *reader.finish()]
        return [tuple(row) for row in found]

    lines = ["phone,tag,timezone", "79120000001,a,UTC", "", '79120000002,"b\rc",UTC']
    expected = read("\n".join(lines).encode(), 0)
    assert [row[:3] for row in expected] == [(2, "79120000001", "a"), (4, "79120000002", "b\rc")]
    for end in ("\r\n", "\r"):
        data = end.join(lines).encode()
        for cut in range(len(data) + 1):
            assert read(data, cut) == expected, (end, cut)
