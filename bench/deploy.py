"""Real service processes for the benchmarks: the provider stub, api, scheduler and senders.

Each deployment gets its own RabbitMQ namespace (deleted when it stops) over a database the
caller chose, and logs to files under the run's directory. Processes are stopped by their
own pids (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.system import free_port
from shared.domain.retry import DEFAULT_RETRY_DELAYS_S
from tests.support.broker import delete_namespace
from tests.support.database import sqlalchemy_url

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token"
STUB_TOKEN = "stub-token"


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, path: str = "/readyz", timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
                try:
                    if (await client.get(self.url + path)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready after {timeout}s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20.0) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def start_process(name: str, module: str, env: dict[str, str], log_dir: Path, port: int) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=os.environ | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Service(name, process, port, log_path)


async def start_stub(log_dir: Path) -> Service:
    port = free_port()
    stub = start_process(
        "stub",
        "services.provider_stub",
        {"STUB_PORT": str(port), "STUB_HOST": "127.0.0.1", "STUB_TOKEN": STUB_TOKEN},
        log_dir,
        port,
    )
    await stub.wait_ready("/healthz")
    return stub


class Stub:
    """The provider stub's control API (faults, reset, stats)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.url = service.url

    async def reset(self, latency_ms: float = 0.0) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            (await client.post("/_control/reset")).raise_for_status()
            response = await client.put("/_control/faults", json={"latency_ms": latency_ms})
            response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.get("/_control/stats")
            response.raise_for_status()
            return dict(response.json())


@dataclass
class Deployment:
    """api + scheduler + N senders over one database, in a namespace of their own."""

    label: str
    database: str
    amqp_url: str
    stub_url: str
    log_dir: Path
    scheduler_env: dict[str, str] = field(default_factory=dict)
    sender_env: dict[str, str] = field(default_factory=dict)
    senders: int = 1
    with_scheduler: bool = True
    namespace: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")
    api: Service | None = None
    scheduler: Service | None = None
    sender_services: list[Service] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": sqlalchemy_url(self.database),
            "AMQP_URL": self.amqp_url,
            "AMQP_NAMESPACE": self.namespace,
            "PROVIDER_URL": self.stub_url,
            "PROVIDER_TOKEN": STUB_TOKEN,
            "API_TOKENS": ADMIN_TOKEN,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }

    @property
    def services(self) -> list[Service]:
        found = [self.api, self.scheduler, *self.sender_services]
        return [s for s in found if s is not None]

    @property
    def retry_delays(self) -> list[float]:
        raw = self.sender_env.get("RETRY_DELAYS_S")
        return [float(d) for d in raw.split(",")] if raw else list(DEFAULT_RETRY_DELAYS_S)

    async def start(self) -> Deployment:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        base = self.base_env()
        prefix = self.label
        api_port = free_port()
        self.api = start_process(
            f"{prefix}-api",
            "services.api",
            base | {"API_PORT": str(api_port), "API_HOST": "127.0.0.1"},
            self.log_dir,
            api_port,
        )
        if self.with_scheduler:
            port = free_port()
            self.scheduler = start_process(
                f"{prefix}-scheduler",
                "services.scheduler",
                base | self.scheduler_env | {"METRICS_PORT": str(port)},
                self.log_dir,
                port,
            )
        for i in range(self.senders):
            port = free_port()
            self.sender_services.append(
                start_process(
                    f"{prefix}-sender{i}",
                    "services.sender",
                    base | self.sender_env | {"METRICS_PORT": str(port)},
                    self.log_dir,
                    port,
                )
            )
        try:
            await asyncio.gather(*(s.wait_ready() for s in self.services))
        except BaseException:
            await self.stop()
            raise
        return self

    def api_client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        assert self.api is not None
        return httpx.AsyncClient(
            base_url=f"{self.api.url}/api/v1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=timeout,
        )

    async def add_sender(self) -> Service:
        port = free_port()
        sender = start_process(
            f"{self.label}-sender{len(self.sender_services)}",
            "services.sender",
            self.base_env() | self.sender_env | {"METRICS_PORT": str(port)},
            self.log_dir,
            port,
        )
        self.sender_services.append(sender)
        await sender.wait_ready()
        return sender

    async def stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.terminate()
            await asyncio.to_thread(self.scheduler.wait_stopped)

    async def restart_scheduler(self) -> Service:
        """A fresh scheduler process (its memory measured from zero)."""
        if self.scheduler is not None:
            self.scheduler.terminate()
            await asyncio.to_thread(self.scheduler.wait_stopped)
        port = free_port()
        restarts = sum(1 for p in self.log_dir.glob(f"{self.label}-scheduler*.log"))
        self.scheduler = start_process(
            f"{self.label}-scheduler{restarts}",
            "services.scheduler",
            self.base_env() | self.scheduler_env | {"METRICS_PORT": str(port)},
            self.log_dir,
            port,
        )
        await self.scheduler.wait_ready()
        return self.scheduler

    async def stop(self) -> None:
        for service in self.services:
            service.terminate()
        for service in self.services:
            await asyncio.to_thread(service.wait_stopped)
        try:
            await delete_namespace(self.namespace, self.retry_delays)
        except Exception as exc:  # the broker is shared; never fail a run on cleanup
            print(f"warning: could not delete namespace {self.namespace}: {exc}", flush=True)
