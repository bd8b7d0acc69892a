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
from tests.support.rig.stub import STUB_TOKEN

__all__ = ["ADMIN_TOKEN", "ROOT", "Deployment"]

ADMIN_TOKEN = "bench-admin-5c0e9a3f7b1d4862a0c5e9f3b7d14628"


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
    # How long each process may take to answer /readyz (imports alone take tens of seconds at
    # a load of 15 on this shared machine).
    ready_timeout_s: float = 60.0
    namespace: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")
    api: ServiceProcess | None = None
    scheduler: ServiceProcess | None = None
    sender_services: list[ServiceProcess] = field(default_factory=list)

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
    def services(self) -> list[ServiceProcess]:
        found = [self.api, self.scheduler, *self.sender_services]
        return [s for s in found if s is not None]

    @property
    def retry_delays(self) -> list[float]:
        raw = self.sender_env.get("RETRY_DELAYS_S")
        return [float(d) for d in raw.split(",")] if raw else list(DEFAULT_RETRY_DELAYS_S)

    def _launch(self, name: str, module: str, env: dict[str, str]) -> ServiceProcess:
        port = free_port()
        own = {"API_PORT": str(port), "API_HOST": "127.0.0.1"}
        if module != "services.api":
            own = {"METRICS_PORT": str(port)}
        env = self.base_env() | env | own
        return launch(f"{self.label}-{name}", module, env, self.log_dir, port)

    async def start(self) -> Deployment:
        self.api = self._launch("api", "services.api", {})
        if self.with_scheduler:
            self.scheduler = self._launch("scheduler", "services.scheduler", self.scheduler_env)
        for i in range(self.senders):
            sender = self._launch(f"sender{i}", "services.sender", self.sender_env)
            self.sender_services.append(sender)
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

    async def add_sender(self) -> ServiceProcess:
        name = f"sender{len(self.sender_services)}"
        sender = self._launch(name, "services.sender", self.sender_env)
        self.sender_services.append(sender)
        await sender.wait_ready(timeout=60.0)
        return sender

    async def stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.terminate()
            await asyncio.to_thread(self.scheduler.wait_stopped)

    async def restart_scheduler(self) -> ServiceProcess:
        """A fresh scheduler process (its memory measured from zero)."""
        await self.stop_scheduler()
        restarts = sum(1 for p in self.log_dir.glob(f"{self.label}-scheduler*.log"))
        name = f"scheduler{restarts}"
        self.scheduler = self._launch(name, "services.scheduler", self.scheduler_env)
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
