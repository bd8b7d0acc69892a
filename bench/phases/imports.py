"""Phase `import`: a CSV import of --import-rows clients through `POST /clients/imports` while
a mailing sends, then both CSV exports. Targets (issue 10): the import in under 60 s, the
api's RSS under 200 MB throughout, and the mailing running meanwhile keeps sending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import system
from bench.context import Bench, log
from bench.format import Report, fmt, table
from bench.result import PhaseResult
from tests.support.rig import data

TARGET_SECONDS = 60.0
TARGET_RSS_MB = 200.0
ZONES = ("Europe/Moscow", "Asia/Yekaterinburg", "UTC", "Asia/Vladivostok")


@dataclass(kw_only=True)
class ImportResult(PhaseResult):
    """The figures as `import_while_sending` returns them (in `extra`)."""

    key = "import"

    def render(self, report: Report) -> None:
        result = self.body()
        met = result["targets_met"]
        if met["kept_sending"]:
            sending = "kept sending"
        elif result.get("mailing_done_before"):
            sending = "not measured: the mailing was done before the import"
        else:
            sending = "NOT met: stopped sending"
        rows = [
            ["rows", fmt(result["rows"]), f"{fmt(result['file_mb'])} MB file"],
            [
                "import time (POST to done)",
                f"{fmt(result['total_s'])} s",
                "met" if met["under_60_s"] else "NOT met (target < 60 s)",
            ],
            ["upload (POST to 202)", f"{fmt(result['upload_s'])} s", ""],
            ["rows/s", fmt(result["rows_per_s"]), ""],
            ["created / rejected", f"{fmt(result['created'])} / {fmt(result['rejected'])}", ""],
            [
                "api RSS start / peak",
                f"{fmt(result['api_rss_start_mb'])} / {fmt(result['api_rss_peak_mb'])} MB",
                "met" if met["rss_under_200_mb"] else "NOT met (target < 200 MB)",
            ],
            [
                "mailing sends/s before / during",
                f"{fmt(result['sent_per_s_before'])} / {fmt(result['sent_per_s_during'])}",
                sending,
            ],
        ]
        for export in result.get("exports", []):
            rows.append(
                [
                    f"GET {export['path']}",
                    f"{fmt(export['rows'])} rows, {fmt(export['mb'])} MB in"
                    f" {fmt(export['seconds'])} s,"
                    f" api RSS peak {fmt(export['api_rss_peak_mb'])} MB",
                    "met" if export["api_rss_peak_mb"] < 200 else "NOT met (target < 200 MB)",
                ]
            )
        report.add(
            f"## CSV import ({fmt(result['rows'])} rows through POST /clients/imports)\n\n"
            f"Status `{result['status']}`, while a {fmt(result['mailing_clients'])}-client"
            " mailing sends.\n\n" + table("figure | value | target", rows)
        )


async def run(bench: Bench) -> ImportResult:
    assert bench.pg is not None and bench.stub_ctl is not None
    await bench.reset_messages(clients=True)
    await bench.stub_ctl.reset()
    out = bench.keep(ImportResult())
    dep = await bench.deploy(bench.deployment("import"))
    try:
        assert dep.api is not None
        async with dep.api_client(timeout=300.0) as api:
            out.extra = await import_while_sending(
                api,
                bench.pg,
                dep.api.pid,
                bench.run_dir,
                rows=bench.args.import_rows,
                mailing_clients=bench.args.import_mailing_clients,
            )
    finally:
        await bench.undeploy(dep)
    log(
        f"  import {out.extra['rows']} rows: {out.extra['total_s']}s, api RSS peak"
        f" {out.extra['api_rss_peak_mb']} MB, sent {out.extra['sent_per_s_during']}/s during"
    )
    return out


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


async def export_csv(api: httpx.AsyncClient, pid: int, path: str) -> dict[str, Any]:
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
    return {
        "path": path,
        "rows": lines - 1,
        "mb": round(size / 2**20, 1),
        "seconds": round(time.monotonic() - started, 1),
        "api_rss_peak_mb": round(max(peak, system.rss_mb(pid)), 1),
    }


async def _sent(pg: psycopg.AsyncConnection[Any], mailing_id: int) -> int:
    row = await (
        await pg.execute(
            "SELECT coalesce(sum(count), 0) FROM message_count"
            " WHERE mailing_id = %s AND status = 'sent'",
            [mailing_id],
        )
    ).fetchone()
    return int(row[0]) if row else 0


async def import_while_sending(
    api: httpx.AsyncClient,
    pg: psycopg.AsyncConnection[Any],
    pid: int,
    work_dir: Path,
    *,
    rows: int,
    mailing_clients: int,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Start a mailing, then import `rows` clients while it sends; `pid` is the api's."""
    csv_path = work_dir / f"import-{rows}.csv"
    await asyncio.to_thread(write_csv, csv_path, rows)
    file_mb = round(csv_path.stat().st_size / 2**20, 1)
    await pg.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone)"
        " SELECT '79' || lpad(g::text, 9, '0'), '900', 'bench-import-mailing', 'UTC'"
        " FROM generate_series(1, %s) AS g",
        [mailing_clients],
    )
    body = data.mailing_body(
        starts_in=-1.0, ends_in=3600.0, text="while importing", tags=["bench-import-mailing"]
    )
    mailing_id = int((await api.post("/mailings", json=body)).json()["id"])
    deadline = time.monotonic() + 60
    while await _sent(pg, mailing_id) < 500 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    before_start, before_t = await _sent(pg, mailing_id), time.monotonic()
    await asyncio.sleep(3)
    before_end, before_t_end = await _sent(pg, mailing_id), time.monotonic()

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
    peak = round(max(r for _, r in series), 1) if series else rss_start
    return {
        "rows": rows,
        "file_mb": file_mb,
        "status": state["status"],
        "upload_s": round(upload_s, 1),  # POST until its 202: the file in the staging table
        "total_s": round(total_s, 1),  # POST until the import is `done`
        "rows_per_s": round(rows / total_s),
        "created": int(state["created"]),
        "rejected": int(state["rejected"]),
        "api_rss_start_mb": round(rss_start, 1),
        "api_rss_peak_mb": peak,
        "mailing_clients": mailing_clients,
        "sent_per_s_before": round((before_end - before_start) / (before_t_end - before_t), 1),
        "sent_per_s_during": round(during / total_s, 1),
        "sent_during": during,
        "mailing_done_before": sent_at_start >= mailing_clients,
        "exports": exports,
        "rss_series": series[:: max(1, len(series) // 200)],
        "targets_met": {
            "under_60_s": state["status"] == "done" and total_s < TARGET_SECONDS,
            "rss_under_200_mb": peak < TARGET_RSS_MB,
            "kept_sending": during > 0 and sent_at_start < mailing_clients,
            "exports_rss_under_200_mb": all(e["api_rss_peak_mb"] < TARGET_RSS_MB for e in exports),
        },
    }
