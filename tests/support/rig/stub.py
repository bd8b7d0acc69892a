"""The provider stub, the one thing the rig mocks, in the three ways its users need it:

- in the caller's loop: `services.provider_stub.app.start_stub()` on the test's own loop
  (tests/pipeline), its state read directly;
- `ThreadedStub`: on its own event loop in a thread of the caller (tests/chaos, the soak), so it
  keeps answering while the caller blocks on a database query or a subprocess;
- `start_stub_process()` + `StubControl` (async) or `StubProcessClient` (blocking): a separate
  process driven over its control API (the benchmarks, whose CPU accounting needs the stub
  apart; the soak, whose end-time check needs stamps no busier process delays).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from services.provider_stub.app import RunningStub, StubConfig, StubState, start_stub
from tests.support.rig.processes import ServiceProcess, free_port, launch

T = TypeVar("T")
STUB_TOKEN = "stub-token"


def deliveries_by_id(state: StubState) -> dict[int, dict[str, Any]]:
    """What the stub accepted: message id -> {phone, text, count, first_at, last_at}."""
    items, _ = state.deliveries.page(None, 10**9)
    return {item["id"]: item for item in items}


class ThreadedStub:
    """The provider stub on its own event loop in a thread: like a real provider, it keeps
    answering while the caller blocks (database queries, subprocess calls), so a stall of the
    caller never turns into request timeouts, and with them resends."""

    def __init__(self, config: StubConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stub", daemon=True)
        self.thread.start()
        self.running: RunningStub = asyncio.run_coroutine_threadsafe(
            start_stub(config=config), self.loop
        ).result(30)
        self.url = self.running.url
        self.state: StubState = self.running.state

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the stub's loop: reads of the delivery record never race its writes."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def set_faults(self, **faults: Any) -> None:
        def apply() -> None:
            self.state.faults = self.state.faults.merged(faults)

        self.call(apply)

    def set_token(self, token: str) -> None:
        """The provider accepts only `token` from now on (a rotated credential)."""

        def apply() -> None:
            self.state.auth_header = f"Bearer {token}"

        self.call(apply)

    def deliveries(self) -> dict[int, dict[str, Any]]:
        return self.call(lambda: deliveries_by_id(self.state))

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.running.close(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


async def start_stub_process(log_dir: Path, token: str = STUB_TOKEN) -> ServiceProcess:
    """`python -m services.provider_stub` on a free port, ready."""
    port = free_port()
    env = {"STUB_PORT": str(port), "STUB_HOST": "127.0.0.1", "STUB_TOKEN": token}
    stub = launch("stub", "services.provider_stub", env, log_dir, port)
    await stub.wait_ready(timeout=60.0, path="/healthz")
    return stub


def prioritise(pid: int, niceness: int = -10) -> bool:
    """Run the stub process ahead of the system under test, if we may (root): it plays an
    external provider on its own machine, and its stamps judge the end-time rule. False when
    the system refused."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError:
        return False
    return True


class StubProcessClient:
    """Blocking calls to a stub process's control API, for callers that read and steer it
    from threads and loops alike (the soak)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=60)

    def set_faults(self, **faults: Any) -> None:
        self._http.put("/_control/faults", json=faults).raise_for_status()

    def set_token(self, token: str) -> None:
        """The provider accepts only `token` from now on (a rotated credential)."""
        self._http.put("/_control/token", json={"token": token}).raise_for_status()

    def stats(self, since: float | None = None) -> dict[str, Any]:
        params = {} if since is None else {"since": since}
        response = self._http.get("/_control/stats", params=params)
        response.raise_for_status()
        return dict(response.json())

    def deliveries(self) -> dict[int, dict[str, Any]]:
        """Every acceptance, by id (paged through `/_control/deliveries`)."""
        out: dict[int, dict[str, Any]] = {}
        after: int | None = None
        while True:
            params = {"limit": 100_000} | ({} if after is None else {"after_id": after})
            response = self._http.get("/_control/deliveries", params=params)
            response.raise_for_status()
            page = response.json()
            out.update((item["id"], item) for item in page["items"])
            after = page["next_after_id"]
            if after is None:
                return out

    def close(self) -> None:
        self._http.close()


class StubControl:
    """A stub process's control API (faults, reset, stats)."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.url = service.url

    async def reset(self, latency_ms: float = 0.0) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            (await client.post("/_control/reset")).raise_for_status()
            response = await client.put("/_control/faults", json={"latency_ms": latency_ms})
            response.raise_for_status()

    async def set_faults(self, **faults: Any) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            (await client.put("/_control/faults", json=faults)).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.get("/_control/stats")
            response.raise_for_status()
            return dict(response.json())
