"""The real service processes (`python -m services.<name>`), started with their settings in the
environment and logging to a file; stopped by their own pid (SIGTERM, then SIGKILL), never by
name. The pipeline tests, the chaos scenarios, the benchmarks and the soak all start them here.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from scripts.private_servers import free_port
from tests.support.database import ROOT
from tests.support.waiting import wait_until

__all__ = ["ProcessGroup", "ServiceProcess", "free_port", "launch"]


@dataclass
class ServiceProcess:
    """One started process. `metrics_port` is where it answers /readyz (the API: its own port)."""

    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return self.metrics_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return self.url

    def running(self) -> bool:
        return self.process.poll() is None

    async def wait_ready(self, timeout: float = 30.0, path: str = "/readyz") -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:

            async def ready() -> bool:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
                try:
                    return (await client.get(self.url + path)).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, timeout=timeout, interval=0.1, message=f"{self.name} ready")

    def terminate(self) -> None:
        """SIGTERM (a graceful stop); `wait_stopped()` waits for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20.0) -> int:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crashed node."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        self.terminate()
        return self.wait_stopped(timeout)

    async def astop(self, timeout: float = 20.0) -> int:
        self.terminate()
        return await asyncio.to_thread(self.wait_stopped, timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logged_events(self) -> list[str]:
        """The `event` of every JSON log line so far (other lines are skipped)."""
        events = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" in record:
                events.append(str(record["event"]))
        return events


def launch(
    name: str,
    module: str,
    env: dict[str, str],
    log_dir: Path,
    port: int,
) -> ServiceProcess:
    """`python -m <module>` from the project root with `env` over this process's environment."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=os.environ | env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, process, port, log_path)


@dataclass
class ProcessGroup:
    """The services of one test or run over one `base_env`; `stop_all()` stops every one."""

    base_env: dict[str, str]
    log_dir: Path
    started: list[ServiceProcess] = field(default_factory=list)
    prefix: str = ""

    def start(
        self, service: str, *, module: str | None = None, **overrides: object
    ) -> ServiceProcess:
        """`services.<service>` (or `module`, a test's wrapper of it) with `overrides`
        (lower-case setting names) over the base env. Its /readyz port is METRICS_PORT, or
        API_PORT for the API when that is overridden."""
        env = self.base_env | {"METRICS_PORT": str(free_port())}
        env |= {key.upper(): str(value) for key, value in overrides.items()}
        ready_on = "API_PORT" if service == "api" and "API_PORT" in env else "METRICS_PORT"
        port = int(env[ready_on])
        index = sum(p.name.startswith(f"{self.prefix}{service}-") for p in self.started)
        name = f"{self.prefix}{service}-{index}"
        proc = launch(name, module or f"services.{service}", env, self.log_dir, port)
        self.started.append(proc)
        return proc

    def running(self, service: str) -> list[ServiceProcess]:
        return [
            p for p in self.started if p.name.startswith(f"{self.prefix}{service}-") and p.running()
        ]

    def stop_all(self) -> None:
        for proc in self.started:
            proc.terminate()
        for proc in self.started:
            proc.wait_stopped(timeout=20)

    async def astop_all(self) -> None:
        for proc in self.started:
            proc.terminate()
        for proc in self.started:
            await asyncio.to_thread(proc.wait_stopped, 20)
