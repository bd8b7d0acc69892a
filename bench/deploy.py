"""Real service processes for the benchmarks: the provider stub, api, scheduler and senders,
started and stopped by the shared rig (tests/support/rig).

Each deployment gets its own RabbitMQ namespace (deleted when it stops) over a database the
caller chose, and logs to files under the run's directory. Processes are stopped by their
own pids (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.domain.retry import DEFAULT_RETRY_DELAYS_S
from tests.support.broker import delete_namespace
from tests.support.database import ROOT, sqlalchemy_url
from tests.support.rig.env import service_env
from tests.support.rig.processes import ServiceProcess, free_port, launch
from tests.support.rig.stub import STUB_TOKEN, StubControl, start_stub_process

__all__ = ["ADMIN_TOKEN", "ROOT", "Deployment", "Service", "Stub", "start_stub"]

ADMIN_TOKEN = "bench-admin-5c0e9a3f7b1d4862a0c5e9f3b7d14628"
# The rig's names under the ones the benchmarks used before it was one package.
Service = ServiceProcess
Stub = StubControl
start_stub = start_stub_process
start_process = launch


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
    # Over every process's settings, the api's too (the tracing phase's OTEL_* variables).
    common_env: dict[str, str] = field(default_factory=dict)
    senders: int = 1
    with_scheduler: bool = True
    # Run the services from this checkout instead of the project's (the baseline runs).
    code_root: Path | None = None
    # How long each process may take to answer /readyz (imports alone take tens of seconds at
    # a load of 15 on this shared machine).
    ready_timeout_s: float = 60.0
    namespace: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")
    api: Service | None = None
    scheduler: Service | None = None
    sender_services: list[Service] = field(default_factory=list)

    def base_env(self) -> dict[str, str]:
        return (
            service_env(
                database_url=sqlalchemy_url(self.database),
                amqp_url=self.amqp_url,
                namespace=self.namespace,
                provider_url=self.stub_url,
                provider_token=STUB_TOKEN,
                api_token=ADMIN_TOKEN,
            )
            | {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
            | self.common_env
        )

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
            cwd=self.code_root,
        )
        if self.with_scheduler:
            port = free_port()
            self.scheduler = start_process(
                f"{prefix}-scheduler",
                "services.scheduler",
                base | self.scheduler_env | {"METRICS_PORT": str(port)},
                self.log_dir,
                port,
                cwd=self.code_root,
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
                    cwd=self.code_root,
                )
            )
        try:
            await asyncio.gather(
                *(s.wait_ready(timeout=self.ready_timeout_s) for s in self.services)
            )
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
            cwd=self.code_root,
        )
        self.sender_services.append(sender)
        await sender.wait_ready(timeout=60.0)
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
            cwd=self.code_root,
        )
        await self.scheduler.wait_ready(timeout=60.0)
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
