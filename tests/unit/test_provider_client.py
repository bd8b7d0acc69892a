"""ProviderClient against a real local HTTP server: the request it makes, what each answer means."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from scripts.private_servers import free_port
from services.sender.provider import NOT_WRITTEN_IN_TIME, Outcome, ProviderClient, TokenSource

TOKEN = "provider-test-token"
PHONE = "79000000001"
TEXT = 'Привет, "мир" \\ 😀\n'


def ok() -> web.Response:
    return web.json_response({"code": 0, "message": "OK"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


@dataclass
class Provider:
    """A local provider whose answer each test chooses; it records what it received."""

    url: str
    answer: Handler | None = None
    received: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def answers(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        async def answer(_: web.Request) -> web.StreamResponse:
            return web.Response(status=status, body=body, headers=headers)

        self.answer = answer


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    state = Provider(url="")

    async def send(request: web.Request) -> web.StreamResponse:
        state.received.append(
            Received(
                path=request.path,
                headers=dict(request.headers),
                body=await request.read(),
                peer=request.transport.get_extra_info("peername")[:2],  # type: ignore[union-attr]
            )
        )
        if state.answer is None:
            return ok()
        return await state.answer(request)

    async def elsewhere(_: web.Request) -> web.StreamResponse:
        state.received.append(Received("/elsewhere", {}, b"", ("", 0)))
        return ok()

    app = web.Application()
    app.router.add_post("/send/{msg_id}", send)
    app.router.add_post("/elsewhere", elsewhere)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@pytest.fixture
async def client(provider: Provider) -> AsyncIterator[ProviderClient]:
    c = ProviderClient(provider.url, TokenSource(TOKEN, None), timeout_s=10.0, max_connections=4)
    try:
        yield c
    finally:
        await c.close()


def _count(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_ok_answer_is_sent_and_the_request_follows_the_contract(
    provider: Provider, client: ProviderClient
) -> None:
    sent_before = _count("mailing_provider_requests_total", {"outcome": "sent"})
    observed_before = _count("mailing_provider_request_seconds_count")

    result = await client.send(42, PHONE, TEXT, 3600.0)

    assert result.outcome is Outcome.SENT
    assert result.error is None
    assert result.retry_after is None
    [request] = provider.received
    assert request.path == "/send/42"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body == {"id": 42, "phone": 79000000001, "text": TEXT}
    assert type(body["phone"]) is int
    assert request.body == json.dumps(
        body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")
    assert _count("mailing_provider_requests_total", {"outcome": "sent"}) == sent_before + 1
    assert _count("mailing_provider_request_seconds_count") == observed_before + 1


async def test_base_url_path_is_kept(provider: Provider) -> None:
    c = ProviderClient(
        provider.url + "api/", TokenSource(TOKEN, None), timeout_s=5.0, max_connections=1
    )
    try:
        result = await c.send(7, PHONE, "x", 60.0)
    finally:
        await c.close()
    # No route there: the server's 404 is a permanent refusal, and the path was /api/send/7.
    assert result.outcome is Outcome.REJECTED
    assert result.error is not None and result.error.startswith("HTTP 404")


async def test_server_error_with_retry_after_is_retried_after_that_delay(
    provider: Provider, client: ProviderClient
) -> None:
    provider.answers(500, b'{"code": 500, "message": "boom"}', {"Retry-After": "7"})
    retry_before = _count("mailing_provider_requests_total", {"outcome": "retry"})

    result = await client.send(1, PHONE, TEXT, 3600.0)

    assert result.outcome is Outcome.RETRY
    assert result.retry_after == 7.0
    assert result.error is not None and result.error.startswith("HTTP 500")
    assert _count("mailing_provider_requests_total", {"outcome": "retry"}) == retry_before + 1


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_permanent_refusals_are_rejected(
    provider: Provider, client: ProviderClient, status: int
) -> None:
    body = b'{"code": 1, "message": "bad phone"}'
    provider.answers(status, body)
    result = await client.send(1, PHONE, TEXT, 3600.0)
    assert result.outcome is Outcome.REJECTED
    assert result.error == f"HTTP {status}: {body!r}"


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refusals_are_unauthorized(
    provider: Provider, client: ProviderClient, status: int
) -> None:
    provider.answers(status, b"")
    result = await client.send(1, PHONE, TEXT, 3600.0)
    assert result.outcome is Outcome.UNAUTHORIZED


@pytest.mark.parametrize(
    "body", [b"not json", b"", b'{"code": "0", "message": "OK"}', b'{"code": 0}', b"[]"]
)
async def test_malformed_ok_answer_is_retried(
    provider: Provider, client: ProviderClient, body: bytes
) -> None:
    provider.answers(200, body)
    result = await client.send(1, PHONE, TEXT, 3600.0)
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith("200 with unexpected body")


async def test_redirect_is_not_followed(provider: Provider, client: ProviderClient) -> None:
    provider.answers(307, b"", {"Location": provider.url + "elsewhere"})
    result = await client.send(1, PHONE, TEXT, 3600.0)
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith("HTTP 307")
    assert [r.path for r in provider.received] == ["/send/1"]


async def _hang(provider: Provider) -> None:
    async def hang(_: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(provider.release.wait(), 30)
        return ok()

    provider.answer = hang


async def test_request_is_cut_at_the_mailing_end(
    provider: Provider, client: ProviderClient
) -> None:
    await _hang(provider)
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await client.send(1, PHONE, TEXT, 0.3)

    elapsed = loop.time() - started
    assert result.outcome is Outcome.RETRY
    assert result.error == "timed out after 0.3s"
    assert 0.25 <= elapsed < 2.0


async def test_request_is_cut_at_the_client_timeout(provider: Provider) -> None:
    await _hang(provider)
    c = ProviderClient(provider.url, TokenSource(TOKEN, None), timeout_s=0.3, max_connections=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result = await c.send(1, PHONE, TEXT, 3600.0)
        elapsed = loop.time() - started
        assert result.outcome is Outcome.RETRY
        assert result.error == "timed out after 0.3s"
        assert 0.25 <= elapsed < 2.0
        # The pool is usable again afterwards (the timed-out connection was not reused).
        provider.answer = None
        assert (await c.send(2, PHONE, TEXT, 3600.0)).outcome is Outcome.SENT
    finally:
        await c.close()


async def test_no_time_left_sends_nothing(provider: Provider, client: ProviderClient) -> None:
    result = await client.send(1, PHONE, TEXT, 0.0)
    assert result.outcome is Outcome.NOT_SENT
    assert result.error == "end time reached"
    assert provider.received == []


async def test_a_last_start_already_past_sends_nothing(
    provider: Provider, client: ProviderClient
) -> None:
    result = await client.send(1, PHONE, TEXT, 60.0, start_by=time.monotonic() - 0.001)
    assert (result.outcome, result.error) == (Outcome.NOT_SENT, NOT_WRITTEN_IN_TIME)
    assert provider.received == []


async def test_a_request_the_loop_writes_after_its_last_start_is_not_sent(
    provider: Provider, client: ProviderClient
) -> None:
    """The request is handed to the client in time, but the loop stalls (a CPU-starved process)
    before it writes it: nothing reaches the provider, and the next request goes out."""
    requests_before = _count("mailing_provider_requests_total", {"outcome": "retry"})
    # Queued before the request's write: the loop runs it, and stalls, first.
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)
    result = await client.send(1, PHONE, TEXT, 60.0, start_by=time.monotonic() + 0.1)
    assert (result.outcome, result.error) == (Outcome.NOT_SENT, NOT_WRITTEN_IN_TIME)
    assert _count("mailing_provider_requests_total", {"outcome": "retry"}) == requests_before
    later = await client.send(2, PHONE, TEXT, 60.0, start_by=time.monotonic() + 10)
    assert later.outcome is Outcome.SENT
    # Not a byte of the first request arrived: the provider saw only the second.
    assert [r.path for r in provider.received] == ["/send/2"]


async def test_a_request_written_before_its_last_start_is_sent(
    provider: Provider, client: ProviderClient
) -> None:
    result = await client.send(5, PHONE, TEXT, 60.0, start_by=time.monotonic() + 10)
    assert result.outcome is Outcome.SENT
    assert provider.received[0].headers["Content-Type"] == "application/json"
    assert json.loads(provider.received[0].body) == {"id": 5, "phone": int(PHONE), "text": TEXT}


async def test_no_token_sends_nothing(provider: Provider) -> None:
    c = ProviderClient(provider.url, TokenSource(None, None), timeout_s=5.0, max_connections=1)
    try:
        result = await c.send(1, PHONE, TEXT, 60.0)
    finally:
        await c.close()
    assert result.outcome is Outcome.UNAUTHORIZED
    assert result.error == "no provider token configured"
    assert provider.received == []


async def test_a_changed_token_file_is_used_by_the_next_request(
    provider: Provider, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    tokens = TokenSource(None, token_file)
    c = ProviderClient(provider.url, tokens, timeout_s=5.0, max_connections=1)
    try:
        assert (await c.send(1, PHONE, TEXT, 60.0)).outcome is Outcome.SENT
        token_file.write_text("second-token\n")
        stat = token_file.stat()
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert tokens.refresh()
        assert (await c.send(2, PHONE, TEXT, 60.0)).outcome is Outcome.SENT
    finally:
        await c.close()
    assert [r.headers["Authorization"] for r in provider.received] == [
        "Bearer first-token",
        "Bearer second-token",
    ]


async def test_connections_are_pooled_up_to_max_connections(
    provider: Provider, client: ProviderClient
) -> None:
    async def slow_ok(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.02)
        return ok()

    provider.answer = slow_ok
    results = await asyncio.gather(*(client.send(i, PHONE, TEXT, 60.0) for i in range(40)))
    assert all(r.outcome is Outcome.SENT for r in results)
    peers = {r.peer for r in provider.received}
    assert 1 <= len(peers) <= 4  # max_connections of the `client` fixture


async def test_refused_connection_is_retried() -> None:
    c = ProviderClient(
        f"http://127.0.0.1:{free_port()}",
        TokenSource(TOKEN, None),
        timeout_s=5.0,
        max_connections=1,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        result = await c.send(1, PHONE, TEXT, 60.0)
    finally:
        await c.close()
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith("CannotConnect")
    assert loop.time() - started < 5.0


async def _raw_server(reply: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (b"this is not HTTP\r\n\r\n", "BadResponse"),
        (b"", "ServerDisconnected"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"code": 0', "TruncatedBody"),
    ],
    ids=["garbage", "disconnect", "truncated-body"],
)
async def test_broken_responses_are_retried(reply: bytes, error_type: str) -> None:
    server, url = await _raw_server(reply)
    c = ProviderClient(url, TokenSource(TOKEN, None), timeout_s=5.0, max_connections=1)
    try:
        result = await c.send(1, PHONE, TEXT, 60.0)
    finally:
        await c.close()
        server.close()
        await server.wait_closed()
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith(error_type)


async def test_close_without_requests_and_send_after_close(provider: Provider) -> None:
    c = ProviderClient(provider.url, TokenSource(TOKEN, None), timeout_s=5.0, max_connections=1)
    await c.close()
    with pytest.raises(RuntimeError):
        await c.send(1, PHONE, TEXT, 60.0)
