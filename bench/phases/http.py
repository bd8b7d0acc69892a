"""Phase `http`: HTTP clients inside one process, to the stub at 0 ms, 64 at once: the
sender's ProviderClient (libcurl's multi interface), plain aiohttp (the ceiling the e2e runs
are compared with), httpx, and faster candidates (pyreqwest, rnet, pycurl's multi interface)
with the same provider semantics (bench/httpload.py)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import system
from bench.context import Bench, log
from bench.httpload import CANDIDATES
from bench.phases.result import PhaseResult

HTTP_CONCURRENCY = 64

if TYPE_CHECKING:
    from bench.report import Report

NAMES = {
    "httpx": "httpx, default transport (httpcore)",
    "httpx-aiohttp": "httpx + httpx-aiohttp transport (the sender's former client)",
    "provider": "the sender's ProviderClient (libcurl multi + classify)",
    "aiohttp": "plain aiohttp",
    "pyreqwest": "pyreqwest (Rust reqwest/hyper, own tokio runtime)",
    "rnet": "rnet (Rust hyper fork, own tokio runtime)",
    "pycurl": "pycurl CurlMulti on the asyncio loop (C libcurl)",
}


@dataclass(kw_only=True)
class HttpResult(PhaseResult):
    key = "http"
    concurrency: int
    rows: list[dict[str, Any]]
    unavailable: list[str] = field(default_factory=list)

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
        from bench.report import fmt, ratio, table

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
                [
                    "client",
                    "concurrency",
                    "requests/s",
                    "client CPU ms/request",
                    "stub CPU ms/request",
                    "vs plain aiohttp",
                ],
                rows,
            )
        )
        self.render_candidates(report, aio)

    def render_candidates(self, report: Report, aio: dict[str, Any] | None) -> None:
        from bench.report import fmt, ratio, table

        rows = []
        for client in CANDIDATES:
            row = self.row(client)
            if row is None:
                continue
            rows.append(
                [
                    NAMES[client],
                    fmt(row["rate"]),
                    ratio(row["rate"], aio["rate"] if aio else None),
                    fmt(row["cpu_ms_per_request"], 3),
                    ratio(row["cpu_ms_per_request"], aio["cpu_ms_per_request"] if aio else None),
                    f"{fmt(row['ok'])} / {fmt(row['requests'])}",
                ]
            )
        if not rows and not self.unavailable:
            return
        text = (
            "### Faster HTTP clients than aiohttp?\n\n"
            "The candidates of the table above side by side with plain aiohttp, measured in "
            "the same run against the same stub with the provider's semantics: a JSON POST "
            "with the bearer token, accepted only on status 200 with the body "
            '`{"code": 0, "message": "OK"}`, a 10 s total timeout, at most as many connections '
            "as workers. CPU is the load process's (`getrusage`, every thread: the Rust "
            "clients' tokio threads count).\n\n"
            + table(
                [
                    "client",
                    "requests/s",
                    "vs aiohttp",
                    "CPU ms/request",
                    "CPU vs aiohttp",
                    "accepted",
                ],
                rows,
            )
        )
        if self.unavailable:
            text += f"\n\nNot installed here, so not measured: {', '.join(self.unavailable)}."
        report.add(text)


async def run(bench: Bench) -> HttpResult:
    assert bench.stub_ctl is not None and bench.stub is not None
    # 64 at once, as in the earlier runs of this table (the e2e ceilings use the sender's own).
    concurrency = HTTP_CONCURRENCY
    unavailable = [c for c in CANDIDATES if importlib.util.find_spec(c) is None]
    out = bench.keep(HttpResult(concurrency=concurrency, rows=[], unavailable=unavailable))
    clients = ["httpx", "httpx-aiohttp", "provider", "aiohttp"]
    clients += [c for c in CANDIDATES if c not in unavailable]
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
