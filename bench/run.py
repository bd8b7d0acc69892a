"""`make bench`: the pipeline's throughput, fan-out, broker, API and statistics figures on
this machine, written to docs/BENCHMARKS.md.

Real processes against the real servers: a fresh random PostgreSQL database and RabbitMQ
namespaces of its own (both removed at the end), the provider stub as a separate process,
api / scheduler / sender started as `python -m services.<name>` with their settings in the
environment. Every comparison is between figures of this same run.

    python -m bench.run                        # full size (about 10-14 minutes)
    python -m bench.run --smoke                # tiny sizes, well under a minute
    python -m bench.run --phases e2e,fanout    # some phases only
    python -m bench.run --drop-stats-db        # remove the kept statistics database
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import psycopg

from bench import profile, stats_db, system
from bench.deploy import ADMIN_TOKEN, ROOT, Deployment, Service, Stub, start_stub
from tests.support import database

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
AMQP_PORT = int(os.environ.get("BENCH_AMQP_PORT", "5672"))
TERMINAL = ("sent", "failed", "expired", "cancelled")
PHASES = ("http", "broker", "e2e", "scaleout", "api", "fanout", "import", "stats")

# The settings every throughput run uses unless it says otherwise (see docs/BENCHMARKS.md,
# "Settings"): found by trying the knobs on this machine. LOG_LEVEL is set per run.
TUNED_SENDER = {
    "MAX_CONNECTIONS": "64",
    "PREFETCH": "1000",
    "BATCH_SIZE": "100",
    "BATCHES_IN_FLIGHT": "8",
    "BATCH_LINGER_MS": "5",
    "DB_POOL_SIZE": "12",
}
SCHEDULER_KNOBS = {"SEND_WINDOW", "LEASE_BATCH_SIZE", "POLL_INTERVAL_S", "FANOUT_CHUNK_SIZE"}
# "defaults" is every shipped default (at LOG_LEVEL=WARNING, like the other variants).
DEFAULT_SWEEP = "LOG_LEVEL=INFO;defaults;SEND_WINDOW=2000"
TUNED_SCHEDULER = {
    "SEND_WINDOW": "5000",
    "LEASE_BATCH_SIZE": "1000",
    "POLL_INTERVAL_S": "0.5",
}


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


@dataclass
class E2ESpec:
    label: str
    latency_ms: float
    log_level: str = "WARNING"
    senders: int = 1
    profile: bool = False
    defaults: bool = False  # the shipped defaults instead of the tuned settings
    sender_env: dict[str, str] = field(default_factory=dict)
    scheduler_env: dict[str, str] = field(default_factory=dict)
    messages: int | None = None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_dir = Path(args.work_dir) / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"run_id": self.run_id, "errors": {}}
        self.db = ""
        self.stub: Service | None = None
        self.stub_ctl: Stub | None = None
        self.pg: psycopg.AsyncConnection[Any] | None = None
        self.own_backends: set[int] = set()
        self.deployments: list[Deployment] = []
        self.sender_env = TUNED_SENDER | parse_env(args.sender_env)
        self.scheduler_env = TUNED_SCHEDULER | parse_env(args.scheduler_env)
        self.started = time.monotonic()
        self.postmaster = system.pid_listening_on(PG_PORT)
        self.rabbit = system.pid_listening_on(AMQP_PORT)

    # --- set-up and tear-down --------------------------------------------------------------

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
        self.stub = await start_stub(self.run_dir)
        self.stub_ctl = Stub(self.stub)
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
        )

    # --- database helpers --------------------------------------------------------------------

    async def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        assert self.pg is not None
        cursor = await self.pg.execute(query, params)
        return await cursor.fetchall() if cursor.description else []

    async def reset_messages(self, *, clients: bool = False) -> None:
        """Empty the tables; services may still be connected (a deadlock is retried)."""
        tables = "message_count, message, mailing" + (", client" if clients else "")
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
        """Bulk insert (as the pipeline tests do); the first `tagged` clients get `tag`."""
        started = time.monotonic()
        await self.sql(
            """
            INSERT INTO client (phone, operator_code, tag, timezone)
            SELECT %(prefix)s || lpad(g::text, 9, '0'), %(operator)s,
                   CASE WHEN g <= %(tagged)s THEN %(tag)s ELSE '' END, 'UTC'
            FROM generate_series(1, %(count)s::bigint) AS g
            """,
            {
                "prefix": phone_prefix,
                "operator": operator,
                "tagged": tagged,
                "tag": tag,
                "count": count,
            },
        )
        await self.sql("VACUUM ANALYZE client")
        return time.monotonic() - started

    async def counts(self, mailing_id: int) -> dict[str, int]:
        rows = await self.sql(
            "SELECT status, count FROM message_count WHERE mailing_id = %s", [mailing_id]
        )
        return {status: int(n) for status, n in rows}

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

    # --- CPU accounting ----------------------------------------------------------------------

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

    # --- one mailing through the pipeline ----------------------------------------------------

    def mailing_body(
        self, *, operator_codes: list[str] | None = None, tags: list[str] | None = None
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "start_at": (now - timedelta(seconds=1)).isoformat(),
            "end_at": (now + timedelta(hours=3)).isoformat(),
            "text": "Benchmark message: your order is on its way",
            "filter": {"operator_codes": operator_codes or [], "tags": tags or []},
        }

    async def run_to_completion(
        self, dep: Deployment, expected: int, *, timeout: float, recorders: list[Any] = ()
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
            if sum(counts.get(s, 0) for s in TERMINAL) >= expected:
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

    # --- phases --------------------------------------------------------------------------------

    async def phase_http(self) -> None:
        """HTTP clients inside one process, to the stub at 0 ms, at the sender's concurrency."""
        assert self.stub_ctl is not None and self.stub is not None
        concurrency = int(self.sender_env["MAX_CONNECTIONS"])
        rows = []
        for client in ("httpx", "httpx-aiohttp", "provider", "aiohttp"):
            await self.stub_ctl.reset(0)
            stub_before = system.cpu_seconds(self.stub.pid)
            result = await self.httpload(
                client, concurrency, seconds=self.args.http_seconds, first_id=1
            )
            result["stub_cpu_ms_per_request"] = round(
                (system.cpu_seconds(self.stub.pid) - stub_before) * 1000 / result["requests"], 3
            )
            rows.append(result)
            log(f"  http {client}: {result['rate']}/s")
        # The same two clients the sender could use, on uvloop's event loop.
        for client in ("provider", "aiohttp"):
            await self.stub_ctl.reset(0)
            result = await self.httpload(
                client, concurrency, seconds=self.args.http_seconds, first_id=1, uvloop=True
            )
            rows.append(result)
            log(f"  http {client} on uvloop: {result['rate']}/s")
        # httpx's default transport at a small concurrency, where its pool is not the limit.
        small = min(concurrency, 8)
        await self.stub_ctl.reset(0)
        result = await self.httpload("httpx", small, seconds=self.args.http_seconds, first_id=1)
        result["note"] = f"httpx default transport at concurrency {small}"
        rows.append(result)
        self.results["http"] = {"concurrency": concurrency, "rows": rows}

    async def httpload(
        self,
        client: str,
        concurrency: int,
        *,
        seconds: float | None = None,
        count: int | None = None,
        first_id: int = 1,
        uvloop: bool = False,
    ) -> dict[str, Any]:
        assert self.stub is not None
        command = [
            sys.executable,
            "-m",
            "bench.httpload",
            "--client",
            client,
            "--url",
            self.stub.url,
            "--concurrency",
            str(concurrency),
            "--first-id",
            str(first_id),
        ]
        command += ["--seconds", str(seconds)] if seconds is not None else ["--count", str(count)]
        if uvloop:
            command.append("--uvloop")
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

    async def phase_broker(self) -> None:
        queue = f"bench-{self.run_id.lower()}-broker"
        command = [
            sys.executable,
            "-m",
            "bench.broker",
            "--url",
            AMQP_URL,
            "--queue",
            queue,
            "--sequential",
            str(self.args.broker_sequential),
            "--gathered",
            str(self.args.broker_gathered),
            "--batch",
            self.scheduler_env["LEASE_BATCH_SIZE"],
        ]
        if self.rabbit:
            command += ["--rabbit-pid", str(self.rabbit)]
        self.results["broker"] = await self.subprocess_json(command)
        b = self.results["broker"]
        log(
            f"  broker: sequential {b['publish_sequential']['rate']}/s, gathered "
            f"{b['publish_gathered']['rate']}/s, consume+ack {b['consume_ack']['rate']}/s"
        )

    def e2e_specs(self) -> list[E2ESpec]:
        # py-spy samples the 50 ms run (non-blocking: the sampled processes never pause; py-spy's
        # own CPU is reported), so the 0 ms headline run is measured undisturbed.
        profiled = not self.args.no_profile and profile.available()
        specs = [
            E2ESpec("0ms-warning", 0.0, "WARNING"),
            E2ESpec("50ms-warning", 50.0, "WARNING", profile=profiled),
        ]
        if self.args.e2e_runs:
            wanted = self.args.e2e_runs.split(",")
            specs = [spec for spec in specs if spec.label in wanted]
        return specs

    async def e2e_run(self, spec: E2ESpec, messages: int) -> dict[str, Any]:
        assert self.stub_ctl is not None
        await self.reset_messages()
        await self.stub_ctl.reset(spec.latency_ms)
        sender_env = {} if spec.defaults else self.sender_env | spec.sender_env
        scheduler_env = {} if spec.defaults else self.scheduler_env | spec.scheduler_env
        dep = await self.deploy(
            self.deployment(
                f"e2e-{spec.label}",
                log_level=spec.log_level,
                sender_env=sender_env,
                scheduler_env=scheduler_env,
                senders=spec.senders,
            )
        )
        recorders: list[profile.Recorder] = []
        try:
            if spec.profile:
                assert dep.scheduler is not None
                targets = {"sender": dep.sender_services[0].pid, "scheduler": dep.scheduler.pid}
                recorders = [
                    profile.Recorder(pid, self.run_dir / f"profile-{name}.txt")
                    for name, pid in targets.items()
                ]
                await asyncio.sleep(1.0)  # py-spy attaches
            timeout = max(120.0, messages / 100)
            result = await self.run_to_completion(
                dep, messages, timeout=timeout, recorders=recorders
            )
        finally:
            profiles = {}
            for name, rec in zip(("sender", "scheduler"), recorders, strict=False):
                path = rec.stop()
                if path is not None:
                    profiles[name] = profile.summarize(path)
            await self.undeploy(dep)
        result |= {
            "label": spec.label,
            "latency_ms": spec.latency_ms,
            "log_level": spec.log_level,
            "senders": spec.senders,
            "settings": "shipped defaults" if spec.defaults else "tuned",
            "sender_env": sender_env,
            "scheduler_env": scheduler_env,
        }
        if profiles:
            result["profiles"] = profiles
        return result

    async def phase_e2e(self) -> None:
        messages = self.args.clients
        await self.reset_messages(clients=True)
        seed_s = await self.seed_clients(messages)
        runs: dict[str, Any] = {}
        self.results["e2e"] = {"clients": messages, "seed_s": round(seed_s, 2), "runs": runs}
        for spec in self.e2e_specs():
            runs[spec.label] = await self.e2e_run(spec, messages)
            run = runs[spec.label]
            log(
                f"  e2e {spec.label}: {run['rate']}/s (steady {run['steady_rate']}/s) "
                f"in {run['seconds']}s, sent {run['sent']}/{messages}"
            )
            if spec.label in ("0ms-warning", "50ms-warning") and not self.args.no_ceilings:
                await self.ceilings(spec.latency_ms, messages)
        if self.args.sweep:
            # The sweep is the part of `make bench` that can give way: skip it when the run
            # would otherwise overshoot its time budget (a loaded machine sends slowly).
            variants = 1 + len([v for v in self.args.sweep.split(";") if v])
            rate = max(run["rate"], 1.0)
            sweep_s = variants * (min(self.args.sweep_messages, messages) / rate + 12)
            elapsed = time.monotonic() - self.started
            rest_s = 300.0 if self.args.fanout_clients >= 500_000 else 60.0
            if elapsed + sweep_s + rest_s > self.args.budget_s:
                self.results["sweep"] = {
                    "skipped": f"after {elapsed:.0f} s the sweep (≈{sweep_s:.0f} s at "
                    f"{rate:.0f} msg/s) would take the run past its {self.args.budget_s:.0f} s "
                    "budget (--budget-s)"
                }
                log(f"  sweep skipped: {self.results['sweep']['skipped']}")
            else:
                await self.sweep()

    async def sweep(self) -> None:
        """One knob at a time from the tuned settings, at a smaller size, stub at 0 ms."""
        messages = min(self.args.sweep_messages, self.args.clients)
        await self.reset_messages(clients=True)
        await self.seed_clients(messages)
        variants: list[tuple[str, dict[str, str], dict[str, str]]] = [("tuned", {}, {})]
        levels: dict[str, str] = {}
        for item in filter(None, self.args.sweep.split(";")):
            sender_env: dict[str, str] = {}
            scheduler_env: dict[str, str] = {}
            if item == "defaults":
                variants.append((item, {}, {}))
                continue
            for pair in item.split(","):
                key, _, value = pair.partition("=")
                key = key.strip().upper()
                if key == "LOG_LEVEL":
                    levels[item] = value.strip().upper()
                    continue
                (scheduler_env if key in SCHEDULER_KNOBS else sender_env)[key] = value.strip()
            variants.append((item, sender_env, scheduler_env))
        out: dict[str, Any] = {"messages": messages, "runs": {}}
        self.results["sweep"] = out
        for label, sender_env, scheduler_env in variants:
            spec = E2ESpec(
                f"sweep-{len(out['runs'])}",
                0.0,
                levels.get(label, "WARNING"),
                defaults=label == "defaults",
                sender_env=sender_env,
                scheduler_env=scheduler_env,
            )
            run = await self.e2e_run(spec, messages)
            run["variant"] = label
            out["runs"][label] = run
            log(f"  sweep {label}: {run['rate']}/s (steady {run['steady_rate']}/s)")

    async def ceilings(self, latency_ms: float, count: int) -> None:
        """The same number of sends straight to the same stub at the sender's concurrency."""
        assert self.stub_ctl is not None
        concurrency = int(self.sender_env["MAX_CONNECTIONS"])
        out = self.results.setdefault("ceilings", {})
        for client in ("aiohttp", "provider"):
            await self.stub_ctl.reset(latency_ms)
            result = await self.httpload(client, concurrency, count=count, first_id=1)
            out[f"{client}@{latency_ms:g}ms"] = result
            log(f"  ceiling {client} at {latency_ms:g} ms: {result['rate']}/s")

    async def phase_scaleout(self) -> None:
        assert self.stub_ctl is not None
        messages = self.args.scaleout_messages
        conns = self.args.scaleout_connections
        await self.reset_messages(clients=True)
        await self.seed_clients(messages)
        out: dict[str, Any] = {
            "messages": messages,
            "latency_ms": 200,
            "max_connections": conns,
            "runs": {},
        }
        self.results["scaleout"] = out
        # One deployment; the second sender joins for the second run (same scheduler, api).
        dep = await self.deploy(
            self.deployment(
                "scaleout", sender_env=self.sender_env | {"MAX_CONNECTIONS": str(conns)}
            )
        )
        try:
            for senders in (1, 2):
                if senders == 2:
                    await dep.add_sender()
                await self.reset_messages()
                await self.purge_send_queue(dep)
                await self.stub_ctl.reset(200.0)
                run = await self.run_to_completion(dep, messages, timeout=max(120.0, messages / 50))
                out["runs"][str(senders)] = run
                log(
                    f"  scale-out {senders} sender(s): steady {run['steady_rate']}/s "
                    f"({run['rate']}/s)"
                )
        finally:
            await self.undeploy(dep)
        one, two = out["runs"]["1"], out["runs"]["2"]
        if one["steady_rate"] and two["steady_rate"]:
            out["speedup"] = round(two["steady_rate"] / one["steady_rate"], 2)
        if one["rate"] and two["rate"]:
            out["speedup_end_to_end"] = round(two["rate"] / one["rate"], 2)

    async def phase_api(self) -> None:
        await self.reset_messages(clients=True)
        seeded = self.args.clients
        await self.seed_clients(seeded)
        dep = await self.deploy(self.deployment("api", with_scheduler=False, senders=0))
        assert dep.api is not None
        rows = []
        try:
            for mode in ("post-client", "get-client"):
                before = system.cpu_seconds(dep.api.pid)
                result = await self.subprocess_json(
                    [
                        sys.executable,
                        "-m",
                        "bench.apiload",
                        "--url",
                        f"{dep.api.url}/api/v1",
                        "--token",
                        ADMIN_TOKEN,
                        "--mode",
                        mode,
                        "--concurrency",
                        str(self.args.api_concurrency),
                        "--seconds",
                        str(self.args.api_seconds),
                        "--max-id",
                        str(seeded),
                    ]
                )
                api_cpu = system.cpu_seconds(dep.api.pid) - before
                result["api_cpu_ms_per_request"] = (
                    round(api_cpu * 1000 / result["requests"], 3) if result["requests"] else None
                )
                rows.append(result)
                log(f"  api {mode}: {result['rate']}/s p99 {result['p99_ms']} ms")
        finally:
            await self.undeploy(dep)
        self.results["api"] = {"clients": seeded, "rows": rows}

    async def phase_import(self) -> None:
        """A CSV import of --import-rows clients while a mailing sends (bench/import_phase.py)."""
        from bench.import_phase import run_import_phase

        assert self.pg is not None and self.stub_ctl is not None
        await self.reset_messages(clients=True)
        await self.stub_ctl.reset()
        dep = await self.deploy(self.deployment("import"))
        try:
            result = await run_import_phase(
                dep=dep,
                pg=self.pg,
                work_dir=self.run_dir,
                rows=self.args.import_rows,
                mailing_clients=self.args.import_mailing_clients,
            )
        finally:
            await self.undeploy(dep)
        self.results["import"] = result.as_dict()
        log(
            f"  import {result.rows} rows: {result.total_s}s, api RSS peak"
            f" {result.api_rss_peak_mb} MB, sent {result.sent_per_s_during}/s during"
        )

    async def phase_fanout(self) -> None:
        assert self.stub_ctl is not None
        total = self.args.fanout_clients
        step = max(total // 10, 1)
        tiny = 100
        await self.reset_messages(clients=True)
        seed_s = await self.seed_clients(total, tagged=step, tag="fanout-step")
        await self.seed_clients(tiny, phone_prefix="76", operator="901", tag="tiny")
        out: dict[str, Any] = {
            "clients": total,
            "step_clients": step,
            "seed_s": round(seed_s, 1),
            "tiny_clients": tiny,
        }
        self.results["fanout"] = out
        # Step 1: a tenth of the clients, a fresh scheduler: its peak RSS. Step 2: every client,
        # another fresh scheduler (same api and sender), the first minute, then cancelled.
        await self.stub_ctl.reset(0)
        dep = await self.deploy(self.deployment("fanout"))
        try:
            out["step"] = await self.watch_big_mailing(
                dep, step, {"tags": ["fanout-step"]}, seconds=None, tiny=None
            )
            log(
                f"  fan-out {step:,}: rows in {out['step']['fanout_s']}s, scheduler peak RSS "
                f"{out['step']['scheduler_peak_rss_mb']} MB"
            )
            await dep.stop_scheduler()
            await self.purge_send_queue(dep)
            await asyncio.sleep(1.0)  # the sender drops the jobs it prefetched
            await self.reset_messages()
            await dep.restart_scheduler()
            await self.stub_ctl.reset(0)
            out["full"] = await self.watch_big_mailing(
                dep, total, {"operator_codes": ["900"]}, seconds=self.args.fanout_seconds, tiny=tiny
            )
        finally:
            await self.undeploy(dep)
        out["chunk_profile"] = await self.explain_fanout_chunk()
        full = out["full"]
        log(
            f"  fan-out {total:,}: rows in {full['fanout_s']}s, first send "
            f"{full['first_delivery_s']}s, {full['first_window_rate']}/s over the first "
            f"{full['window_s']}s, peak queue {full['queue_peak']}, scheduler peak RSS "
            f"{full['scheduler_peak_rss_mb']} MB"
        )

    async def watch_big_mailing(
        self,
        dep: Deployment,
        expected: int,
        mailing_filter: dict[str, list[str]],
        *,
        seconds: float | None,
        tiny: int | None,
    ) -> dict[str, Any]:
        """Create a big mailing and watch it: fan-out, first send, rate, queue depth, RSS.

        With `seconds=None` it runs until the fan-out is done plus a few seconds of sending;
        otherwise for `seconds`. With `tiny`, a 100-client mailing is created during the
        fan-out and another once it is done, each timed until it is `completed`. Then the big
        mailing is deleted (cancelled) and the deletion timed.
        """
        assert dep.scheduler is not None and self.stub_ctl is not None
        scheduler_pid = dep.scheduler.pid
        peak = {"rss": system.rss_mb(scheduler_pid), "queue": 0}
        rss_series: list[tuple[float, float]] = []
        stop = asyncio.Event()
        t0 = time.time()

        async def poll_rss() -> None:
            while not stop.is_set():
                rss = system.rss_mb(scheduler_pid)
                peak["rss"] = max(peak["rss"], rss)
                rss_series.append((time.time() - t0, rss))
                await asyncio.sleep(0.1)

        async def poll_queue() -> None:
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel()
                while not stop.is_set():
                    declared = await channel.declare_queue(f"{dep.namespace}.send", passive=True)
                    depth = int(declared.declaration_result.message_count or 0)
                    peak["queue"] = max(peak["queue"], depth)
                    await asyncio.sleep(0.25)

        pollers = [asyncio.create_task(poll_rss()), asyncio.create_task(poll_queue())]
        tiny_results: dict[str, Any] = {}
        tiny_tasks: list[asyncio.Task[None]] = []

        async def tiny_mailing(label: str) -> None:
            async with dep.api_client() as api:
                started = time.time()
                response = await api.post(
                    "/mailings", json=self.mailing_body(operator_codes=["901"])
                )
                response.raise_for_status()
                mailing_id = int(response.json()["id"])
                deadline = started + self.args.tiny_timeout
                while time.time() < deadline:
                    row = await self.mailing_row(mailing_id)
                    if row["status"] == "completed":
                        break
                    await asyncio.sleep(0.05)
                waited = time.time() - started
                row = await self.mailing_row(mailing_id)
                counts = await self.counts(mailing_id)
                tiny_results[label] = {
                    "created_at_s": round(started - t0, 2),
                    "completed": row["status"] == "completed",
                    "seconds": round(row["created_to_completed_s"], 2)
                    if row["created_to_completed_s"] is not None
                    else None,
                    "waited_s": round(waited, 2),
                    "sent": counts.get("sent", 0),
                }

        async with dep.api_client() as api:
            t0 = time.time()
            response = await api.post("/mailings", json=self.mailing_body(**mailing_filter))
        response.raise_for_status()
        mailing_id = int(response.json()["id"])
        series: list[tuple[float, int]] = []
        fanout_done_at: float | None = None
        rows_at_window_end: int | None = None
        end_at = None if seconds is None else t0 + seconds
        try:
            if tiny is not None:
                tiny_tasks.append(
                    asyncio.create_task(
                        self._after(self.args.tiny_during_s, tiny_mailing, "during_fanout")
                    )
                )
            while True:
                now = time.time()
                counts = await self.counts(mailing_id)
                series.append((now - t0, counts.get("sent", 0)))
                if fanout_done_at is None:
                    row = await self.mailing_row(mailing_id)
                    if row["fanout_done_at"] is not None:
                        fanout_done_at = now
                # The second small mailing once the fan-out is done: only the send queue is
                # ahead of it then.
                if tiny is not None and len(tiny_tasks) == 1 and fanout_done_at:
                    tiny_tasks.append(
                        asyncio.create_task(self._after(1.0, tiny_mailing, "after_fanout"))
                    )
                if end_at is not None and rows_at_window_end is None and now >= end_at:
                    rows_at_window_end = sum(counts.values())
                if now - t0 > self.args.fanout_timeout:
                    break
                if end_at is None:
                    if fanout_done_at is not None and now - fanout_done_at >= self.args.step_tail_s:
                        break
                elif now >= end_at and fanout_done_at is not None:
                    # The window is over; the fan-out's end and the small mailings are timed
                    # to the end (a small one is given up after --tiny-timeout).
                    if len(tiny_tasks) >= (2 if tiny is not None else 0) and all(
                        t.done() for t in tiny_tasks
                    ):
                        break
                await asyncio.sleep(0.1)
            if rows_at_window_end is None:
                rows_at_window_end = sum((await self.counts(mailing_id)).values())
            watched_s = time.time() - t0
            window = watched_s if seconds is None else seconds
            sent_in_window = count_at(series, window)
            stub_before_delete = await self.stub_ctl.stats()
            async with dep.api_client() as api:
                started = time.time()
                response = await api.delete(f"/mailings/{mailing_id}")
                delete_s = time.time() - started
            response.raise_for_status()
            await asyncio.sleep(2.0)
            stub_after = await self.stub_ctl.stats()
        finally:
            stop.set()
            for task in pollers + tiny_tasks:
                task.cancel()
            await asyncio.gather(*pollers, *tiny_tasks, return_exceptions=True)
        row = await self.mailing_row(mailing_id)
        first = stub_before_delete.get("first_received_at")
        delivered_after_delete = (stub_after.get("by_outcome", {}).get("ok", 0)) - (
            stub_before_delete.get("by_outcome", {}).get("ok", 0)
        )
        return {
            "mailing_id": mailing_id,
            "messages": expected,
            "fanout_s": r(row["fanout_s"], 2),
            "fanout_done_after_create_s": r(fanout_done_at - t0, 2) if fanout_done_at else None,
            "first_delivery_s": round(first - t0, 3) if first else None,
            "window_s": round(window, 1),
            "watched_s": round(watched_s, 1),
            "rows_at_window_end": rows_at_window_end,
            "fanout_rows_per_s": round(rows_at_window_end / window, 0)
            if rows_at_window_end and window
            else None,
            "sent_in_window": sent_in_window,
            "first_window_rate": round(sent_in_window / window, 1) if window else None,
            "queue_peak": peak["queue"],
            "scheduler_peak_rss_mb": round(peak["rss"], 1),
            "scheduler_rss_start_mb": round(rss_series[0][1], 1) if rss_series else None,
            "delete_request_ms": round(delete_s * 1000, 1),
            "delivered_within_2s_after_delete": delivered_after_delete,
            "tiny": tiny_results,
            "load": [round(x, 2) for x in system.load_average()],
        }

    async def explain_fanout_chunk(self) -> dict[str, Any]:
        """One fan-out chunk as the scheduler runs it, under EXPLAIN ANALYZE, rolled back:
        where its time goes (the row inserts and indexes, the foreign-key and counter
        triggers)."""
        import re

        from services.scheduler.fanout import insert_chunk

        chunk = int(self.scheduler_env.get("FANOUT_CHUNK_SIZE", "20000"))
        query = re.sub(
            r"(?<!:):(\w+)", r"%(\1)s", str(insert_chunk(by_operator_code=False, by_tag=False))
        )
        assert self.pg is not None
        async with self.pg.transaction(force_rollback=True):
            rows = await self.sql(
                """
                INSERT INTO mailing (start_at, end_at, text, status, started_at)
                VALUES (now(), now() + interval '1 hour', 'explain', 'running', now())
                RETURNING id
                """
            )
            plan = await self.sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + query,
                {
                    "mailing_id": rows[0][0],
                    "cursor": 0,
                    "high": 10**12,
                    "limit": chunk,
                    "ws": None,
                    "we": None,
                },
            )
        lines = [line for (line,) in plan]
        counted = await self.sql(
            "SELECT count(*) FROM client WHERE id <= %s AND deleted_at IS NULL", [chunk]
        )
        chunk = int(counted[0][0])
        triggers = {}
        for line in lines:
            match = re.search(r"Trigger (?:for constraint )?(\S+): time=([\d.]+) calls=(\d+)", line)
            if match:
                triggers[match[1]] = float(match[2])
        total = next(
            (float(m[1]) for line in lines if (m := re.search(r"Execution Time: ([\d.]+)", line))),
            None,
        )
        return {"clients": chunk, "execution_ms": total, "triggers_ms": triggers}

    @staticmethod
    async def _after(delay: float, fn: Callable[[str], Awaitable[None]], label: str) -> None:
        await asyncio.sleep(delay)
        await fn(label)

    async def phase_stats(self) -> None:
        rows = self.args.stats_rows
        layout = stats_db.Layout.of(rows)
        name = self.args.stats_db or (
            f"mailing_bench_stats_tmp_{self.run_id.lower()}"
            if self.args.stats_throwaway
            else stats_db.default_name(rows)
        )
        try:
            info = await asyncio.to_thread(stats_db.ensure, name, layout, lambda m: log(m))
        except BaseException:
            if self.args.stats_throwaway:
                stats_db.drop(name)
            raise
        out: dict[str, Any] = info | {
            "rows": rows,
            "mailings": layout.mailings,
            "big_mailing_rows": layout.big,
        }
        self.results["stats"] = out
        log(f"  stats db {name}: {'reused' if info['reused'] else 'seeded'} ({rows:,} rows)")
        dep = await self.deploy(
            self.deployment("stats", with_scheduler=False, senders=0, database_name=name)
        )
        assert dep.api is not None
        writer_stop = asyncio.Event()
        writes = {"batches": 0, "rows": 0}
        writer = asyncio.create_task(self.status_writer(name, layout, writer_stop, writes))
        profiled = not self.args.no_profile and profile.available()
        try:
            await asyncio.sleep(0.5)
            started = time.monotonic()
            measurements = []
            for mode, concurrency in (("stats-all", 1), ("stats-one", 1), ("stats-all", 4)):
                before = system.cpu_seconds(dep.api.pid)
                recorder = None
                if mode == "stats-all" and concurrency == 1 and profiled:
                    recorder = profile.Recorder(dep.api.pid, self.run_dir / "profile-api-stats.txt")
                    await asyncio.sleep(0.5)
                result = await self.subprocess_json(
                    [
                        sys.executable,
                        "-m",
                        "bench.apiload",
                        "--url",
                        f"{dep.api.url}/api/v1",
                        "--token",
                        ADMIN_TOKEN,
                        "--mode",
                        mode,
                        "--concurrency",
                        str(concurrency),
                        "--count",
                        str(self.args.stats_requests),
                        "--max-id",
                        "1",
                    ]
                )
                result["api_cpu_ms_per_request"] = round(
                    (system.cpu_seconds(dep.api.pid) - before) * 1000 / result["requests"], 2
                )
                if recorder is not None:
                    path = recorder.stop()
                    if path is not None:
                        out["api_profile"] = profile.summarize(path)
                measurements.append(result)
                log(
                    f"  stats {mode} x{concurrency}: p50 {result['p50_ms']} ms, "
                    f"p95 {result['p95_ms']} ms"
                )
            elapsed = time.monotonic() - started
        finally:
            writer_stop.set()
            with contextlib.suppress(Exception):
                await writer
            await self.undeploy(dep)
            if self.args.stats_throwaway:
                stats_db.drop(name)
        out["rows_measured"] = measurements
        out["background_writes"] = {
            "batches": writes["batches"],
            "rows": writes["rows"],
            "rows_per_s": round(writes["rows"] / elapsed, 1) if elapsed else None,
        }

    async def status_writer(
        self, name: str, layout: stats_db.Layout, stop: asyncio.Event, writes: dict[str, int]
    ) -> None:
        """Simulated senders: flip sent/failed on random 100-row batches, paced, with the
        counter triggers doing their work as in production (half of them in the big mailing)."""
        import random

        interval = 100 / self.args.stats_write_rate
        async with await psycopg.AsyncConnection.connect(
            database._server_dsn(name), autocommit=True
        ) as conn:
            next_at = time.monotonic()
            while not stop.is_set():
                if random.random() < 0.5:
                    low = random.randint(1, max(layout.big - 100, 1))
                else:
                    low = random.randint(layout.big + 1, max(layout.rows - 100, layout.big + 1))
                cursor = await conn.execute(
                    """
                    UPDATE message SET status = CASE WHEN status = 'sent' THEN 'failed'
                                                     ELSE 'sent' END,
                                       updated_at = now()
                    WHERE id BETWEEN %s AND %s AND status IN ('sent', 'failed')
                    """,
                    [low, low + 99],
                )
                writes["batches"] += 1
                writes["rows"] += cursor.rowcount
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                else:
                    next_at = time.monotonic()

    # --- the whole run -----------------------------------------------------------------------

    async def run(self) -> None:
        if self.args.wait_quiet:
            await self.wait_until_quiet()
        started = self.started = time.monotonic()
        phases = [p for p in self.args.phases.split(",") if p]
        self.results["args"] = {k: v for k, v in vars(self.args).items() if k != "func"}
        self.results["settings"] = {
            "sender": self.sender_env,
            "scheduler": self.scheduler_env,
        }
        try:
            await self.setup()
            for name in phases:
                log(f"phase {name}")
                phase_started = time.monotonic()
                load = system.load_average()[0]
                try:
                    await getattr(self, f"phase_{name}")()
                except Exception as exc:
                    self.results["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
                    log(f"phase {name} failed: {exc}")
                    traceback.print_exc()
                self.results.setdefault("phase_seconds", {})[name] = {
                    "seconds": round(time.monotonic() - phase_started, 1),
                    "load_at_start": round(load, 2),
                }
        finally:
            await self.teardown()
        self.results["total_seconds"] = round(time.monotonic() - started, 1)
        self.results["machine"] = self.results.get("machine", {}) | {
            "load_at_end": [round(x, 2) for x in system.load_average()]
        }
        from bench.report import render

        (self.run_dir / "results.json").write_text(json.dumps(self.results, indent=2, default=str))
        report = Path(self.args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render(self.results))
        log(f"report: {report} (raw figures: {self.run_dir / 'results.json'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmarks of the mailing pipeline")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it all works")
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--fanout-clients", type=int, default=1_000_000)
    parser.add_argument("--stats-rows", type=int, default=10_000_000)
    parser.add_argument("--fanout-seconds", type=float, default=60.0)
    parser.add_argument("--fanout-timeout", type=float, default=150.0)
    parser.add_argument("--tiny-during-s", type=float, default=5.0)
    parser.add_argument(
        "--step-tail-s", type=float, default=3.0, help="sending watched after the step's fan-out"
    )
    parser.add_argument("--tiny-timeout", type=float, default=90.0)
    parser.add_argument("--scaleout-messages", type=int, default=4_000)
    parser.add_argument("--scaleout-connections", type=int, default=50)
    parser.add_argument("--http-seconds", type=float, default=3.0)
    parser.add_argument("--broker-sequential", type=int, default=2_000)
    parser.add_argument("--broker-gathered", type=int, default=10_000)
    parser.add_argument("--api-seconds", type=float, default=6.0)
    parser.add_argument("--api-concurrency", type=int, default=16)
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--import-mailing-clients", type=int, default=200_000)
    parser.add_argument("--stats-requests", type=int, default=300)
    parser.add_argument("--stats-write-rate", type=float, default=2_000.0, help="rows/s")
    parser.add_argument("--stats-db", help="database name for the statistics phase")
    parser.add_argument(
        "--stats-throwaway", action="store_true", help="seed a temporary stats db, drop it after"
    )
    parser.add_argument("--drop-stats-db", action="store_true", help="drop the kept stats db")
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="only re-write the report from a run's figures"
    )
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--sender-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--scheduler-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument(
        "--sweep",
        default=DEFAULT_SWEEP,
        help="settings variants tried one at a time against the tuned settings: "
        "'KEY=V[,KEY=V];KEY=V;...' ('' for none)",
    )
    parser.add_argument("--sweep-messages", type=int, default=10_000)
    parser.add_argument(
        "--budget-s", type=float, default=840.0, help="skip the sweep to stay within this"
    )
    parser.add_argument(
        "--e2e-runs",
        help="comma-separated subset of 0ms-warning,50ms-warning",
    )
    parser.add_argument("--report", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--work-dir", default=str(ROOT / "build" / "bench"))
    parser.add_argument("--wait-quiet", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--wait-quiet-s", type=float, default=1800.0)
    parser.add_argument("--max-load", type=float, default=1.5)
    return parser


SMOKE = {
    "sweep": "",
    "step_tail_s": 1.0,
    "sweep_messages": 300,
    "clients": 500,
    "fanout_clients": 5_000,
    "stats_rows": 20_000,
    "fanout_seconds": 3.0,
    "tiny_during_s": 0.5,
    "tiny_timeout": 15.0,
    "scaleout_messages": 200,
    "http_seconds": 0.5,
    "broker_sequential": 100,
    "broker_gathered": 500,
    "api_seconds": 0.5,
    "stats_requests": 10,
    "import_rows": 5_000,
    "import_mailing_clients": 2_000,
    "stats_throwaway": True,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.render:
        from bench.report import render

        Path(args.report).write_text(render(json.loads(Path(args.render).read_text())))
        print(f"report: {args.report}")
        return
    if args.drop_stats_db:
        name = args.stats_db or stats_db.default_name(args.stats_rows)
        stats_db.drop(name)
        print(f"dropped {name}")
        return
    if args.smoke:
        defaults = build_parser().parse_args([])
        for key, value in SMOKE.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    if args.wait_quiet is None:
        args.wait_quiet = not args.smoke
    bench = Bench(args)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    asyncio.run(bench.run())


if __name__ == "__main__":
    main()
