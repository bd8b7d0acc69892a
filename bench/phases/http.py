"""Phase `http`: HTTP clients inside one process, to the stub at 0 ms, 64 at once: the
sender's ProviderClient (libcurl's multi interface), plain aiohttp (the ceiling the e2e runs
are compared with) and httpx, with the same provider semantics (bench/httpload.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import system
from bench.context import Bench, log
from bench.format import Report, fmt, ratio, table
from bench.result import PhaseResult

HTTP_CONCURRENCY = 64

NAMES = {
    "httpx": "httpx, default transport (httpcore)",
    "httpx-aiohttp": "httpx + httpx-aiohttp transport (the sender's former client)",
    "provider": "the sender's ProviderClient (libcurl multi + classify)",
    "aiohttp": "plain aiohttp",
}


@dataclass(kw_only=True)
class HttpResult(PhaseResult):
    key = "http"
    concurrency: int
    rows: list[dict[str, Any]]

    def row(self, client: str, loop: str = "asyncio") -> dict[str, Any] | None:
        return next(
            (
                x
                for x in self.rows
                if x["client"] == client and x.get("loop", "asyncio") == loop and "note" not in x
            ),
            None,
        )

    def render(self, report: Report) -> None:
        rows = []
        aio = self.row("aiohttp")
        for row in self.rows:
            name = NAMES.get(row["client"], row["client"])
            if row.get("loop") == "uvloop":
                name += ", on uvloop"
            rows.append(
                [
                    name,
                    row["concurrency"],
                    fmt(row["rate"]),
                    fmt(row["cpu_ms_per_request"], 3),
                    fmt(row.get("stub_cpu_ms_per_request"), 3),
                    ratio(row["rate"], aio["rate"] if aio else None),
                ]
            )
        report.add(
            "## HTTP clients, one process to the stub (0 ms)\n\n"
            f"Time-boxed ({fmt(report.r.get('args', {}).get('http_seconds'))} s each, after a "
            "warm-up that opens the connections), each worker one request at a time.\n\n"
            + table(
                (
                    "client | concurrency | requests/s | client CPU ms/request | "
                    "stub CPU ms/request | vs plain aiohttp"
                ),
                rows,
            )
        )


async def run(bench: Bench) -> HttpResult:
    assert bench.stub_ctl is not None and bench.stub is not None
    # 64 at once, as in the earlier runs of this table (the e2e ceilings use the sender's own).
    concurrency = HTTP_CONCURRENCY
    out = bench.keep(HttpResult(concurrency=concurrency, rows=[]))
    clients = ["httpx", "httpx-aiohttp", "provider", "aiohttp"]
    for client in clients:
        await bench.stub_ctl.reset(0)
        stub_before = system.cpu_seconds(bench.stub.pid)
        result = await bench.httpload(
            client, concurrency, seconds=bench.args.http_seconds, first_id=1
        )
        result["stub_cpu_ms_per_request"] = round(
            (system.cpu_seconds(bench.stub.pid) - stub_before) * 1000 / result["requests"], 3
        )
        out.rows.append(result)
        log(f"  http {client}: {result['rate']}/s")
    # The same two clients the sender could use, on uvloop's event loop.
    for client in ("provider", "aiohttp"):
        await bench.stub_ctl.reset(0)
        result = await bench.httpload(
            client, concurrency, seconds=bench.args.http_seconds, first_id=1, uvloop=True
        )
        out.rows.append(result)
        log(f"  http {client} on uvloop: {result['rate']}/s")
    # httpx's default transport at a small concurrency, where its pool is not the limit.
    small = min(concurrency, 8)
    await bench.stub_ctl.reset(0)
    result = await bench.httpload("httpx", small, seconds=bench.args.http_seconds, first_id=1)
    result["note"] = f"httpx default transport at concurrency {small}"
    out.rows.append(result)
    return out
