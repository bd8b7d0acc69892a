"""Provider-style sends from one process straight to the stub, with a chosen HTTP client.

    python -m bench.httpload --client aiohttp --url http://127.0.0.1:8090 --concurrency 64 \
        (--count 50000 | --seconds 5) [--first-id 1]

Prints one JSON line: requests, ok, seconds, rate, cpu_s. `--concurrency` workers each send
one request at a time (so at most that many connections), as the sender does with its
MAX_CONNECTIONS semaphore. Clients:

- aiohttp        plain aiohttp ClientSession (the ceiling of the sender's HTTP layer)
- httpx          httpx.AsyncClient with its default transport (httpcore)
- httpx-aiohttp  httpx.AsyncClient over httpx_aiohttp.AiohttpTransport (the sender's first
                 client)
- provider       the sender's own services.sender.provider.ProviderClient (libcurl multi, with
                 its request building and classify())

Every client keeps the provider semantics of the sender: a POST of the JSON body with the
bearer token, accepted only on status 200 with the body `{"code": 0, "message": "OK"}`, a
10 s total timeout, at most `--concurrency` connections.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
from collections.abc import Awaitable, Callable
from typing import Any

from bench import loadgen

TOKEN = "stub-token"
TIMEOUT_S = 10.0
PHONE = "79000000001"
TEXT = "Benchmark message"
OK = b'{"code": 0, "message": "OK"}'

Send = Callable[[int], Awaitable[bool]]


def _ok(body: bytes) -> bool:
    data = json.loads(body)
    return data.get("code") == 0 and data.get("message") == "OK"


async def _make_client(name: str, url: str, concurrency: int) -> tuple[Send, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            base_url=url,
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )

        async def send_aiohttp(i: int) -> bool:
            payload = {"id": i, "phone": int(PHONE), "text": TEXT}
            async with session.post(f"/send/{i}", json=payload, headers=headers) as response:
                body = await response.read()
                return response.status == 200 and _ok(body)

        return send_aiohttp, session.close
    if name in ("httpx", "httpx-aiohttp"):
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        transport = None
        if name == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(limits=limits)
        client = httpx.AsyncClient(
            base_url=url, transport=transport, limits=limits, timeout=httpx.Timeout(TIMEOUT_S)
        )

        async def send_httpx(i: int) -> bool:
            payload = {"id": i, "phone": int(PHONE), "text": TEXT}
            response = await client.post(f"/send/{i}", json=payload, headers=headers)
            return response.status_code == 200 and _ok(response.content)

        return send_httpx, client.aclose
    if name == "provider":
        from services.sender.provider import Outcome, ProviderClient, TokenSource

        provider = ProviderClient(
            url, TokenSource(TOKEN, None), timeout_s=10.0, max_connections=concurrency
        )

        async def send_provider(i: int) -> bool:
            result = await provider.send(i, PHONE, TEXT, 3600.0)
            return result.outcome is Outcome.SENT

        return send_provider, provider.close
    raise SystemExit(f"unknown client {name}")


async def run(
    client: str,
    url: str,
    concurrency: int,
    count: int | None,
    seconds: float | None,
    first_id: int,
    warmup: int,
) -> dict[str, Any]:
    send, close = await _make_client(client, url, concurrency)
    ids = itertools.count(first_id)
    # Warm the connection pool so every run starts with its connections open.
    await asyncio.gather(*(send(next(ids)) for _ in range(min(warmup, concurrency))))
    ok = errors = 0

    async def one() -> None:
        nonlocal ok, errors
        try:
            ok += await send(next(ids))
        except Exception:
            errors += 1

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    done, elapsed = await loadgen.closed_loop(one, concurrency, count, seconds)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    result = close()
    if asyncio.iscoroutine(result):
        await result
    return {
        "client": client,
        "concurrency": concurrency,
        "requests": done,
        "ok": ok,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rate": round(done / elapsed, 1) if elapsed else 0.0,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_request": round(cpu * 1000 / done, 4) if done else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = loadgen.parser(__doc__.splitlines()[0], concurrency=64)
    parser.add_argument("--client", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--first-id", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = loadgen.parse(parser, argv)
    runner = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    work = run(
        args.client,
        args.url,
        args.concurrency,
        args.count,
        args.seconds,
        args.first_id,
        args.warmup,
    )
    loadgen.emit(runner(work) | {"loop": "uvloop" if args.uvloop else "asyncio"})


if __name__ == "__main__":
    main()
