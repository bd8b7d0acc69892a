"""A closed-loop load generator for the admin API: N workers, each one request at a time.

    python -m bench.apiload --url http://127.0.0.1:8000/api/v1 --token T --mode post-client \
        --concurrency 32 --seconds 8 [--max-id 50000] [--first 0]

Modes: post-client (POST /clients, a fresh phone each time), get-client (GET /clients/{id},
ids drawn from 1..max-id), stats-all (GET /mailings/stats), stats-one (GET
/mailings/{id}/stats with --max-id as the id). Prints one JSON line: requests, rate,
latency percentiles (ms), status counts and the generator's own CPU seconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import aiohttp

from bench import loadgen


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_figures(latencies_s: list[float]) -> dict[str, float | None]:
    ms = [x * 1000 for x in latencies_s]

    def r(v: float | None) -> float | None:
        return round(v, 2) if v is not None else None

    return {
        "p50_ms": r(percentile(ms, 50)),
        "p95_ms": r(percentile(ms, 95)),
        "p99_ms": r(percentile(ms, 99)),
        "max_ms": r(max(ms) if ms else None),
    }


async def run(
    url: str,
    token: str,
    mode: str,
    concurrency: int,
    seconds: float | None,
    count: int | None,
    max_id: int,
    first: int,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    phones = iter(range(first, first + 10**9))
    paths = {
        "get-client": lambda: f"clients/{random.randint(1, max_id)}",
        "stats-all": lambda: "mailings/stats",
        "stats-one": lambda: f"mailings/{max_id}/stats",
    }
    if mode not in paths and mode != "post-client":
        raise SystemExit(f"unknown mode {mode}")
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        base_url=url.rstrip("/") + "/", headers=headers, connector=connector
    ) as session:

        async def request() -> int:
            if mode == "post-client":
                body = {
                    "phone": f"78{next(phones):09d}",
                    "timezone": "Europe/Moscow",
                    "tag": "load",
                }
                call = session.post("clients", json=body)
            else:
                call = session.get(paths[mode]())
            async with call as response:
                await response.read()
                return response.status

        async def one() -> None:
            started = time.perf_counter()
            try:
                status = await request()
            except aiohttp.ClientError:
                status = 0
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1

        # Warm-up: open the connections, fill the API's pools and caches.
        for _ in range(min(concurrency, 8)):
            await request()
        cpu = time.process_time()
        done, elapsed = await loadgen.closed_loop(one, concurrency, count, seconds)
        cpu = time.process_time() - cpu
    return {
        "mode": mode,
        "concurrency": concurrency,
        "requests": done,
        "seconds": round(elapsed, 3),
        "rate": round(done / elapsed, 1) if elapsed else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "generator_cpu_s": round(cpu, 3),
        **latency_figures(latencies),
    }


def main(argv: list[str] | None = None) -> None:
    parser = loadgen.parser(__doc__.splitlines()[0], concurrency=32)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--max-id", type=int, default=1)
    parser.add_argument("--first", type=int, default=0)
    args = loadgen.parse(parser, argv)
    loadgen.emit(
        asyncio.run(
            run(
                args.url,
                args.token,
                args.mode,
                args.concurrency,
                args.seconds,
                args.count,
                args.max_id,
                args.first,
            )
        )
    )


if __name__ == "__main__":
    main()
