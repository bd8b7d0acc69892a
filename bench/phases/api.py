"""Phase `api`: the admin API (one uvicorn process) under a closed-loop load of
`POST /clients` and `GET /clients/{id}` (bench/apiload.py in a subprocess)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import system
from bench.context import Bench, log
from bench.format import Report, fmt, table
from bench.result import PhaseResult


@dataclass(kw_only=True)
class ApiResult(PhaseResult):
    key = "api"
    clients: int
    rows: list[dict[str, Any]]

    def render(self, report: Report) -> None:
        api = self.body()
        rows = []
        for row in api["rows"]:
            rows.append(
                [
                    "POST /clients" if row["mode"] == "post-client" else "GET /clients/{id}",
                    row["concurrency"],
                    fmt(row["requests"]),
                    fmt(row["rate"]),
                    fmt(row["p50_ms"]),
                    fmt(row["p99_ms"]),
                    ", ".join(f"{k}: {v}" for k, v in row["statuses"].items()),
                    fmt(row["api_cpu_ms_per_request"], 2),
                    fmt(
                        row["generator_cpu_s"] / row["seconds"] * 100 if row["seconds"] else None, 0
                    )
                    + "%",
                ]
            )
        report.add(
            f"## Admin API (uvicorn, one process, {fmt(api['clients'])} clients in the table)\n\n"
            "A closed-loop load generator (aiohttp, one process, each worker one request at a "
            "time) on the same 2 cores; its own CPU use is in the last column.\n\n"
            + table(
                (
                    "request | workers | requests | req/s | p50 ms | p99 ms | statuses | "
                    "API CPU ms/req | generator CPU"
                ),
                rows,
            )
        )


async def run(bench: Bench) -> ApiResult:
    await bench.reset_messages(clients=True)
    seeded = bench.args.clients
    await bench.seed_clients(seeded)
    dep = await bench.deploy(bench.deployment("api", with_scheduler=False, senders=0))
    assert dep.api is not None
    out = bench.keep(ApiResult(clients=seeded, rows=[]))
    rows = out.rows
    try:
        for mode in ("post-client", "get-client"):
            before = system.cpu_seconds(dep.api.pid)
            result = await bench.apiload(
                dep.api.url,
                mode,
                concurrency=bench.args.api_concurrency,
                seconds=bench.args.api_seconds,
                max_id=seeded,
            )
            api_cpu = system.cpu_seconds(dep.api.pid) - before
            result["api_cpu_ms_per_request"] = (
                round(api_cpu * 1000 / result["requests"], 3) if result["requests"] else None
            )
            rows.append(result)
            log(f"  api {mode}: {result['rate']}/s p99 {result['p99_ms']} ms")
    finally:
        await bench.undeploy(dep)
    return out
