"""What every benchmark phase works with: the run's database, stub and deployments, its SQL
and CPU accounting, one mailing run to completion, a load generator run as a subprocess.

A phase (bench/phases/<name>.py) is `async def run(bench: Bench) -> <Name>Result`; its result
is a dataclass that stores itself in the run's figures and renders its report section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import psycopg

from bench import profile, system
from bench.deploy import ADMIN_TOKEN, ROOT, Deployment
from bench.result import PhaseResult
from shared.settings import SenderSettings
from tests.support import database
from tests.support.rig import data
from tests.support.rig.processes import ServiceProcess
from tests.support.rig.stub import StubControl, start_stub_process

__all__ = ["ADMIN_TOKEN", "ROOT", "Bench"]

R = TypeVar("R", bound=PhaseResult)

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
AMQP_PORT = int(os.environ.get("BENCH_AMQP_PORT", "5672"))

# The throughput runs use the shipped defaults (the settings an operator gets), each run
# setting only LOG_LEVEL; `--sender-env` / `--scheduler-env` override them for a whole run.
# FORMER_TUNED is what the runs used before they moved to the shipped defaults (64 connections, a
# 0.5 s poll, found by trying the knobs on this machine): the sweep tries it against them.
FORMER_TUNED_SENDER = {
    "MAX_CONNECTIONS": "64",
    "PREFETCH": "1000",
    "DB_POOL_SIZE": "12",
}
FORMER_TUNED_SCHEDULER = {"POLL_INTERVAL_S": "0.5"}
SCHEDULER_KNOBS = {"LEASE_CAP", "LEASE_BATCH_SIZE", "POLL_INTERVAL_S", "FANOUT_CHUNK_SIZE"}
DEFAULT_SWEEP = ";".join(
    [
        "LOG_LEVEL=INFO",
        ",".join(f"{k}={v}" for k, v in (FORMER_TUNED_SENDER | FORMER_TUNED_SCHEDULER).items()),
        "MAX_CONNECTIONS=64",
        "BATCH_SIZE=200",
        "LEASE_CAP=2000",
    ]
)


def log(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key.strip().upper()] = value.strip()
    return out


def rate_between(series: list[tuple[float, int]], total: int, lo: float, hi: float) -> float | None:
    """Sends per second between the moments `lo` and `hi` of `total` were done."""
    t_lo = next((t for t, n in series if n >= lo * total), None)
    t_hi = next((t for t, n in series if n >= hi * total), None)
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    return (hi - lo) * total / (t_hi - t_lo)


def count_at(series: list[tuple[float, int]], at: float) -> int:
    found = 0
    for t, n in series:
        if t > at:
            break
        found = n
    return found


def r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_dir = Path(args.work_dir) / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"run_id": self.run_id, "errors": {}}
        self.db = ""
        self.stub: ServiceProcess | None = None
        self.stub_ctl: StubControl | None = None
        self.pg: psycopg.AsyncConnection[Any] | None = None
        self.own_backends: set[int] = set()
        self.deployments: list[Deployment] = []
        self.phase_results: dict[str, PhaseResult] = {}
        self.sender_env = parse_env(args.sender_env)
        self.scheduler_env = parse_env(args.scheduler_env)
        self.started = time.monotonic()
        self.postmaster = system.pid_listening_on(PG_PORT)
        self.rabbit = system.pid_listening_on(AMQP_PORT)

    def keep(self, result: R) -> R:
        """Hold a phase's result as soon as it exists, so a phase that fails half-way still
        reports what it measured (its figures are filled in as it goes)."""
        self.phase_results[result.key] = result
        return result

    def store_results(self) -> None:
        for result in self.phase_results.values():
            self.results.update(result.figures())

    async def wait_until_quiet(self) -> None:
        """On a shared machine, wait (up to 30 min) while another heavy run is going."""
        record: dict[str, Any] = {"threshold_load": self.args.max_load, "waited_s": 0}
        started = time.monotonic()
        while True:
            load = system.load_average()
            busy = system.busy_processes()
            record["load_at_check"] = [round(x, 2) for x in load]
            record["busy_processes"] = busy
            if load[0] <= self.args.max_load and not busy:
                break
            waited = time.monotonic() - started
            if waited >= self.args.wait_quiet_s:
                record["gave_up"] = True
                log(f"machine still busy after {waited:.0f}s; measuring anyway")
                break
            log(f"machine busy (load {load[0]:.2f}, {len(busy)} pytest processes); waiting 60s")
            await asyncio.sleep(60)
        record["waited_s"] = round(time.monotonic() - started)
        self.results["preflight"] = record

    async def setup(self) -> None:
        machine = system.Machine.read()
        self.results["machine"] = machine.__dict__ | {
            "load_at_start": [round(x, 2) for x in system.load_average()],
            "postgres": await self._postgres_version(),
            "rabbitmq": await self._rabbitmq_version(),
            "python_impl": platform.python_implementation(),
            "py_spy": profile.available(),
            "postmaster_pid": self.postmaster,
            "rabbitmq_pid": self.rabbit,
        }
        self.db = database.create_database("mailing_bench")
        database.migrate(self.db)
        self.stub = await start_stub_process(self.run_dir)
        self.stub_ctl = StubControl(self.stub)
        self.pg = await psycopg.AsyncConnection.connect(
            database._server_dsn(self.db), autocommit=True
        )
        row = await (await self.pg.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        self.own_backends.add(int(row[0]))
        self.results["database"] = self.db

    async def _postgres_version(self) -> str:
        async with await psycopg.AsyncConnection.connect(database.ADMIN_DSN) as conn:
            row = await (await conn.execute("SHOW server_version")).fetchone()
        return str(row[0]) if row else "?"

    async def _rabbitmq_version(self) -> str:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            props = connection.transport.connection.server_properties  # type: ignore[union-attr]
            version = props.get("version", "?")
        return version.decode() if isinstance(version, bytes) else str(version)

    async def teardown(self) -> None:
        for dep in self.deployments:
            with contextlib.suppress(Exception):
                await dep.stop()
        if self.pg is not None:
            await self.pg.close()
        if self.stub is not None:
            self.stub.terminate()
            self.stub.wait_stopped()
        if self.db:
            database.drop_database(self.db)

    async def deploy(self, dep: Deployment) -> Deployment:
        self.deployments.append(dep)
        return await dep.start()

    async def undeploy(self, dep: Deployment) -> None:
        await dep.stop()
        if dep in self.deployments:
            self.deployments.remove(dep)

    def deployment(
        self,
        label: str,
        *,
        log_level: str = "WARNING",
        sender_env: dict[str, str] | None = None,
        scheduler_env: dict[str, str] | None = None,
        senders: int = 1,
        database_name: str | None = None,
        with_scheduler: bool = True,
        common_env: dict[str, str] | None = None,
    ) -> Deployment:
        assert self.stub is not None
        level = {"LOG_LEVEL": log_level}
        return Deployment(
            label=label,
            database=database_name or self.db,
            amqp_url=AMQP_URL,
            stub_url=self.stub.url,
            log_dir=self.run_dir,
            scheduler_env=(self.scheduler_env if scheduler_env is None else scheduler_env) | level,
            sender_env=(self.sender_env if sender_env is None else sender_env) | level,
            senders=senders,
            with_scheduler=with_scheduler,
            common_env=common_env or {},
        )

    async def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        assert self.pg is not None
        cursor = await self.pg.execute(query, params)
        return await cursor.fetchall() if cursor.description else []

    async def reset_messages(self, *, clients: bool = False) -> None:
        """Empty the tables; services may still be connected (a deadlock is retried)."""
        tables = "message_count_folded, message_count_delta, message, mailing" + (
            ", client" if clients else ""
        )
        for attempt in range(10):
            try:
                await self.sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
                return
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                if attempt == 9:
                    raise
                await asyncio.sleep(0.5)

    async def seed_clients(
        self,
        count: int,
        *,
        phone_prefix: str = "79",
        operator: str = "900",
        tagged: int = 0,
        tag: str = "",
    ) -> float:
        """Bulk insert (the rig's, as the pipeline tests do); the first `tagged` get `tag`."""
        assert self.pg is not None
        return await data.aseed_clients(
            self.pg,
            count,
            phone_prefix=phone_prefix,
            operator_code=operator,
            tagged=tagged,
            tag=tag,
            analyze=True,
        )

    async def counts(self, mailing_id: int) -> dict[str, int]:
        assert self.pg is not None
        return await data.acounter_counts(self.pg, mailing_id)

    async def mailing_row(self, mailing_id: int) -> dict[str, Any]:
        rows = await self.sql(
            """
            SELECT status, created_at, started_at, fanout_done_at, completed_at,
                   extract(epoch FROM fanout_done_at - started_at),
                   extract(epoch FROM completed_at - created_at)
            FROM mailing WHERE id = %s
            """,
            [mailing_id],
        )
        keys = ("status", "created_at", "started_at", "fanout_done_at", "completed_at")
        row = rows[0]
        out = dict(zip(keys, row[:5], strict=True))
        out["fanout_s"] = float(row[5]) if row[5] is not None else None
        out["created_to_completed_s"] = float(row[6]) if row[6] is not None else None
        return out

    async def purge_send_queue(self, dep: Deployment) -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{dep.namespace}.send", passive=True)
            await queue.purge()

    async def cpu_snapshot(self, dep: Deployment) -> dict[str, Any]:
        backends = await self.sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", [dep.database]
        )
        snapshot: dict[str, Any] = {
            "api": system.cpu_seconds(dep.api.pid) if dep.api else 0.0,
            "scheduler": system.cpu_seconds(dep.scheduler.pid) if dep.scheduler else 0.0,
            "sender": sum(system.cpu_seconds(s.pid) for s in dep.sender_services),
            "stub": system.cpu_seconds(self.stub.pid) if self.stub else 0.0,
            "rabbitmq": system.cpu_seconds(self.rabbit) if self.rabbit else 0.0,
            "postgres_server": system.tree_cpu_seconds(self.postmaster) if self.postmaster else 0.0,
            "_backends": {
                int(pid): system.cpu_seconds(int(pid))
                for (pid,) in backends
                if int(pid) not in self.own_backends
            },
            "_wall": time.monotonic(),
        }
        return snapshot

    @staticmethod
    def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
        out = {key: round(after[key] - before[key], 2) for key in before if not key.startswith("_")}
        out["postgres_db"] = round(
            sum(cpu - before["_backends"].get(pid, 0.0) for pid, cpu in after["_backends"].items()),
            2,
        )
        out["wall"] = round(after["_wall"] - before["_wall"], 2)
        return out

    def mailing_body(
        self, *, operator_codes: list[str] | None = None, tags: list[str] | None = None
    ) -> dict[str, Any]:
        return data.mailing_body(
            starts_in=-1.0,
            ends_in=3 * 3600.0,
            text="Benchmark message: your order is on its way",
            tags=tags,
            operator_codes=operator_codes,
        )

    async def run_to_completion(
        self,
        dep: Deployment,
        expected: int,
        *,
        timeout: float,
        recorders: tuple[Any, ...] | list[Any] = (),
    ) -> dict[str, Any]:
        """Create a mailing to every client and wait until all its messages are terminal."""
        assert self.stub_ctl is not None
        before = await self.cpu_snapshot(dep)
        spy_before = sum(rec.cpu_seconds() for rec in recorders)
        load_before = system.load_average()
        async with dep.api_client() as api:
            t0 = time.time()
            response = await api.post("/mailings", json=self.mailing_body())
            created = time.time()
        response.raise_for_status()
        mailing_id = int(response.json()["id"])
        series: list[tuple[float, int]] = []
        timed_out = False
        counts: dict[str, int] = {}
        while True:
            counts = await self.counts(mailing_id)
            now = time.time()
            series.append((now - t0, counts.get("sent", 0)))
            if sum(counts.get(s, 0) for s in data.TERMINAL) >= expected:
                break
            if now - t0 > timeout:
                timed_out = True
                break
            await asyncio.sleep(0.05)
        t1 = time.time()
        after = await self.cpu_snapshot(dep)
        spy_cpu = sum(rec.cpu_seconds() for rec in recorders) - spy_before
        stub = await self.stub_ctl.stats()
        sent = counts.get("sent", 0)
        elapsed = t1 - t0
        cpu = self.cpu_delta(before, after)
        per_msg = {
            key: round(value * 1000 / sent, 3) if sent else None
            for key, value in cpu.items()
            if key != "wall"
        }
        first = stub.get("first_received_at")
        row = await self.mailing_row(mailing_id)
        return {
            "mailing_id": mailing_id,
            "expected": expected,
            "sent": sent,
            "counts": counts,
            "timed_out": timed_out,
            "seconds": round(elapsed, 2),
            "rate": round(sent / elapsed, 1) if elapsed else 0.0,
            "steady_rate": r(rate_between(series, expected, 0.1, 0.9)),
            "create_request_ms": round((created - t0) * 1000, 1),
            "first_delivery_s": round(first - t0, 3) if first else None,
            "fanout_s": r(row["fanout_s"], 2),
            "stub_requests": stub.get("requests_total"),
            "stub_duplicates": stub.get("duplicates"),
            "cpu_s": cpu,
            "cpu_ms_per_msg": per_msg,
            "profiler_cpu_s": round(spy_cpu, 2) if recorders else None,
            "machine_busy": round(
                sum(v for k, v in cpu.items() if k not in ("wall", "postgres_db"))
                / (elapsed * (os.cpu_count() or 1)),
                3,
            )
            if elapsed
            else None,
            "load": [round(x, 2) for x in load_before] + [round(system.load_average()[0], 2)],
        }

    async def httpload(
        self, client: str, concurrency: int, *, first_id: int = 1, uvloop: bool = False, **size: Any
    ) -> dict[str, Any]:
        """`bench.httpload` to the stub in a subprocess; `seconds=` or `count=` requests."""
        assert self.stub is not None
        options = {"client": client, "url": self.stub.url, "concurrency": concurrency}
        extra = ["--uvloop"] if uvloop else []
        return await self.load("bench.httpload", options | {"first_id": first_id} | size, extra)

    @property
    def max_connections(self) -> int:
        """The sender's MAX_CONNECTIONS in these runs (the shipped default unless overridden)."""
        value = self.sender_env.get("MAX_CONNECTIONS")
        if value is not None:
            return int(value)
        return int(SenderSettings.model_fields["max_connections"].default)

    async def apiload(
        self, api_url: str, mode: str, *, concurrency: int, max_id: int, **size: Any
    ) -> dict[str, Any]:
        """`bench.apiload` against the API at `api_url` in a subprocess: time-boxed
        (`seconds=`) or a fixed number of requests (`count=`)."""
        options: dict[str, Any] = {"url": f"{api_url}/api/v1", "token": ADMIN_TOKEN}
        options |= {"mode": mode, "concurrency": concurrency, "max_id": max_id}
        return await self.load("bench.apiload", options | size)

    async def load(
        self, module: str, options: dict[str, Any], extra: list[str] | None = None
    ) -> dict[str, Any]:
        """A load generator run as a subprocess, `--key value` per option (None: left out)."""
        command = [sys.executable, "-m", module, *(extra or [])]
        for key, value in options.items():
            if value is not None:
                command += [f"--{key.replace('_', '-')}", str(value)]
        return await self.subprocess_json(command)

    async def subprocess_json(self, command: list[str], timeout: float = 600) -> dict[str, Any]:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:4])} failed: {err.decode()[-2000:]}")
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
