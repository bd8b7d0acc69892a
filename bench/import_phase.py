"""Bench phase: a CSV import of a million clients through the API while a mailing sends.

Self-contained: `run_import_phase(...)` takes a running deployment (api, scheduler, senders),
an autocommit connection to its database and the sizes, and returns an `ImportResult`.
Targets (issue 10): the import in under 60 s, the api's RSS under 200 MB throughout, and the
mailing that runs meanwhile keeps sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench import system
from bench.deploy import Deployment

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 200.0
ZONES = ("Europe/Moscow", "Asia/Yekaterinburg", "UTC", "Asia/Vladivostok")


@dataclass
class ExportResult:
    path: str
    rows: int
    mb: float
    seconds: float
    api_rss_peak_mb: float


@dataclass
class ImportResult:
    rows: int
    file_mb: float
    status: str
    upload_s: float  # POST until its 202: the file streamed into the staging table
    total_s: float  # POST until the import is `done`
    rows_per_s: float
    created: int
    rejected: int
    api_rss_start_mb: float
    api_rss_peak_mb: float
    mailing_clients: int
    sent_per_s_before: float | None  # the mailing's send rate just before the import
    sent_per_s_during: float | None  # and while it ran
    sent_during: int
    mailing_done_before: bool  # the mailing had sent everything before the import began
    exports: list[ExportResult] = field(default_factory=list)
    rss_series: list[tuple[float, float]] = field(default_factory=list)

    @property
    def targets_met(self) -> dict[str, bool]:
        return {
            "under_60_s": self.status == "done" and self.total_s < TARGET_SECONDS,
            "rss_under_200_mb": self.api_rss_peak_mb < TARGET_RSS_MB,
            "kept_sending": self.sent_during > 0 and not self.mailing_done_before,
            "exports_rss_under_200_mb": all(
                e.api_rss_peak_mb < TARGET_RSS_MB for e in self.exports
            ),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"targets_met": self.targets_met}


def write_csv(path: Path, rows: int, *, bad_every: int = 10_000) -> None:
    """`rows` clients, one in `bad_every` with a bad phone (so rejections are exercised)."""
    with path.open("w") as out:
        out.write("phone,tag,timezone,operator_code,opted_out\n")
        chunk: list[str] = []
        for n in range(rows):
            phone = f"75{n:09d}" if n % bad_every else f"75{n:08d}x"
            chunk.append(f"{phone},import-{n % 50},{ZONES[n % 4]},,\n")
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


async def _file_chunks(path: Path, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, size):
            yield chunk


async def export_csv(api: Any, pid: int, path: str) -> ExportResult:
    """Stream one CSV export to nowhere, counting its rows and the api's peak RSS."""
    peak = system.rss_mb(pid)
    lines = size = 0
    started = polled = time.monotonic()
    async with api.stream("GET", path) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            lines += chunk.count(b"\n")
            size += len(chunk)
            if time.monotonic() - polled >= 0.1:
                peak = max(peak, system.rss_mb(pid))
                polled = time.monotonic()
    peak = max(peak, system.rss_mb(pid))
    return ExportResult(
        path=path,
        rows=lines - 1,
        mb=round(size / 2**20, 1),
        seconds=round(time.monotonic() - started, 1),
        api_rss_peak_mb=round(peak, 1),
    )


async def _sent(pg: psycopg.AsyncConnection[Any], mailing_id: int) -> int:
    row = await (
        await pg.execute(
            "SELECT coalesce(sum(count), 0) FROM message_count"
            " WHERE mailing_id = %s AND status = 'sent'",
            [mailing_id],
        )
    ).fetchone()
    return int(row[0]) if row else 0


async def run_import_phase(
    *,
    dep: Deployment,
    pg: psycopg.AsyncConnection[Any],
    work_dir: Path,
    rows: int = 1_000_000,
    mailing_clients: int = 200_000,
    timeout_s: float = 300.0,
) -> ImportResult:
    assert dep.api is not None
    csv_path = work_dir / f"import-{rows}.csv"
    await asyncio.to_thread(write_csv, csv_path, rows)
    file_mb = round(csv_path.stat().st_size / 2**20, 1)
    await pg.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone)"
        " SELECT '79' || lpad(g::text, 9, '0'), '900', 'bench-import-mailing', 'UTC'"
        " FROM generate_series(1, %s) AS g",
        [mailing_clients],
    )
    now = datetime.now(UTC)
    async with dep.api_client(timeout=timeout_s) as api:
        mailing = (
            await api.post(
                "/mailings",
                json={
                    "start_at": (now - timedelta(seconds=1)).isoformat(),
                    "end_at": (now + timedelta(hours=1)).isoformat(),
                    "text": "while importing",
                    "filter": {"operator_codes": [], "tags": ["bench-import-mailing"]},
                },
            )
        ).json()
        mailing_id = int(mailing["id"])
        deadline = time.monotonic() + 60
        while await _sent(pg, mailing_id) < 500 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        before_start, before_t = await _sent(pg, mailing_id), time.monotonic()
        await asyncio.sleep(3)
        before_end, before_t_end = await _sent(pg, mailing_id), time.monotonic()

        pid = dep.api.pid
        rss_start = system.rss_mb(pid)
        series: list[tuple[float, float]] = []
        stop = asyncio.Event()
        t0 = time.monotonic()

        async def poll_rss() -> None:
            while not stop.is_set():
                series.append((round(time.monotonic() - t0, 2), round(system.rss_mb(pid), 1)))
                await asyncio.sleep(0.1)

        poller = asyncio.create_task(poll_rss())
        sent_at_start = await _sent(pg, mailing_id)
        try:
            response = await api.post(
                "/clients/imports",
                content=_file_chunks(csv_path),
                headers={"Content-Type": "text/csv"},
            )
            response.raise_for_status()
            upload_s = time.monotonic() - t0
            import_id = response.json()["id"]
            while True:
                state = (await api.get(f"/clients/imports/{import_id}")).json()
                if state["status"] != "running" or time.monotonic() - t0 > timeout_s:
                    break
                await asyncio.sleep(0.2)
            total_s = time.monotonic() - t0
        finally:
            stop.set()
            await poller
        sent_at_end = await _sent(pg, mailing_id)
        exports = [
            await export_csv(api, pid, "/clients/export"),
            await export_csv(api, pid, f"/mailings/{mailing_id}/messages/export"),
        ]
        await api.delete(f"/mailings/{mailing_id}")
    csv_path.unlink(missing_ok=True)
    during = sent_at_end - sent_at_start
    return ImportResult(
        rows=rows,
        file_mb=file_mb,
        status=state["status"],
        upload_s=round(upload_s, 1),
        total_s=round(total_s, 1),
        rows_per_s=round(rows / total_s),
        created=int(state["created"]),
        rejected=int(state["rejected"]),
        api_rss_start_mb=round(rss_start, 1),
        api_rss_peak_mb=round(max(r for _, r in series), 1) if series else rss_start,
        mailing_clients=mailing_clients,
        sent_per_s_before=round((before_end - before_start) / (before_t_end - before_t), 1),
        sent_per_s_during=round(during / total_s, 1),
        sent_during=during,
        mailing_done_before=sent_at_start >= mailing_clients,
        exports=exports,
        rss_series=series[:: max(1, len(series) // 200)],
    )
