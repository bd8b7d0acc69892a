"""The chaos rig: a whole deployment per test (real api, scheduler and sender processes, the
provider stub in a thread of the test process), the checks every scenario makes, its figures.

Every scenario ends with `Rig.verify()`, which checks, from the stub's record and the database:

- every message of the mailing reached a terminal status;
- exactly one message per matching client (nothing left out, nothing created twice);
- every message marked `sent` was accepted by the provider, to its client's phone;
- nothing accepted by the provider after the mailing's end time;
- duplicates (a message accepted more than once) counted, and within the scenario's bound
  apart from those after a request timeout (the provider may have taken the first one);
- the per-status counters (and the stats endpoint, unless the mailing was deleted) agree with
  a `GROUP BY` over the messages;

and `Rig.finish()` also checks that no service log holds the API or the provider token, then
prints the figures and appends them as one JSON line to `$CHAOS_RESULTS`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from services.provider_stub.app import RunningStub, StubConfig, StubState, start_stub
from tests.support.database import ROOT
from tests.support.outcomes import may_have_reached_provider
from tests.support.processes import ProcessGroup, ServiceProcess, free_port
from tests.support.waiting import wait_until

TERMINAL = frozenset({"sent", "failed", "expired", "cancelled"})
RETRY_DELAYS = [0.2, 0.5, 1.0, 2.0]
# Unique per test session, so finding one in a log can only mean it leaked there.
API_TOKEN = f"chaos-api-{secrets.token_hex(12)}"
PROVIDER_TOKEN = f"chaos-provider-{secrets.token_hex(12)}"
RESULTS_PATH = Path(os.environ.get("CHAOS_RESULTS", str(ROOT / ".chaos-results.jsonl")))
RUN_ID = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)

# Tuned like tests/pipeline: short leases and retry delays so recovery shows within seconds.
BASE_ENV = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "POLL_INTERVAL_S": "0.5",
    # The broker window must drain within a lease, or the reaper re-publishes the whole window
    # every LEASE_TTL_S (see docs/RELIABILITY.md): 1,000 in 10 s asks only 100 sends/s of a
    # sender on this shared 2-core machine.
    "SEND_WINDOW": "1000",
    "LEASE_TTL_S": "10",
    "SENDING_LEASE_S": "5",
    "PROVIDER_TIMEOUT_S": "2",
    "END_SAFETY_MARGIN_S": "0.3",
    "RETRY_DELAYS_S": ",".join(str(d) for d in RETRY_DELAYS),
    "BREAKER_COOLDOWN_S": "0.5",
    "BREAKER_MAX_COOLDOWN_S": "2",
    "DB_POOL_SIZE": "5",
}


T = TypeVar("T")


class ThreadedStub:
    """The provider stub on its own event loop in a thread: like a real provider, it keeps
    answering while the test blocks (database queries, subprocess calls), so a stall of the
    test never turns into request timeouts, and with them resends."""

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

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.running.close(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@dataclass
class Rig:
    scenario: str
    db_dsn: str  # libpq DSN, for the test's own queries
    db_url: str  # SQLAlchemy URL, for the services
    amqp_url: str
    namespace: str
    stub: ThreadedStub
    processes: ProcessGroup
    log_dir: Path
    api_port: int = 0
    api: httpx.AsyncClient | None = None
    api_process: ServiceProcess | None = None
    started_at: float = field(default_factory=time.monotonic)
    figures: dict[str, Any] = field(default_factory=dict)

    # --- processes --------------------------------------------------------------------------

    def start_scheduler(self, **overrides: Any) -> ServiceProcess:
        return self.processes.start("scheduler", **overrides)

    def start_sender(self, **overrides: Any) -> ServiceProcess:
        return self.processes.start("sender", **overrides)

    async def start_api(self, **overrides: Any) -> ServiceProcess:
        """The real API process (uvicorn), serving on `api_port`; `api` is its client."""
        self.api_port = free_port()
        proc = self.processes.start(
            "api", api_host="127.0.0.1", api_port=self.api_port, **overrides
        )
        proc.metrics_port = self.api_port  # the API serves /readyz on its own port
        self.api_process = proc
        await proc.wait_ready()
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}/api/v1",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30.0,
        )
        return proc

    async def start(
        self, *, schedulers: int = 1, senders: int = 1, **sender_overrides: Any
    ) -> list[ServiceProcess]:
        procs = [self.start_scheduler() for _ in range(schedulers)]
        procs += [self.start_sender(**sender_overrides) for _ in range(senders)]
        for proc in procs:
            await proc.wait_ready()
        return procs

    def all_logs(self) -> dict[str, str]:
        return {proc.name: proc.log_text() for proc in self.processes.started}

    # --- data -------------------------------------------------------------------------------

    def db(self) -> psycopg.Connection:
        return psycopg.connect(self.db_dsn, autocommit=True)

    def seed_clients(
        self,
        count: int,
        *,
        tag: str = "",
        timezone: str = "UTC",
        first: int = 1,
        operator_code: str = "900",
    ) -> None:
        """Bulk insert, as tests/pipeline does; phones 79XXXXXXXXX unique per `first..`."""
        with self.db() as conn:
            conn.execute(
                """
                INSERT INTO client (phone, operator_code, tag, timezone)
                SELECT '79' || lpad(g::text, 9, '0'), %s, %s, %s
                FROM generate_series(%s::bigint, %s::bigint) AS g
                """,
                [operator_code, tag, timezone, first, first + count - 1],
            )

    async def create_mailing(
        self,
        *,
        starts_in: float = -1.0,
        ends_in: float = 3600.0,
        text: str = "Chaos",
        tags: list[str] | None = None,
        operator_codes: list[str] | None = None,
    ) -> dict[str, Any]:
        assert self.api is not None, "start_api() first"
        now = datetime.now(UTC)
        body = {
            "start_at": (now + timedelta(seconds=starts_in)).isoformat(),
            "end_at": (now + timedelta(seconds=ends_in)).isoformat(),
            "text": text,
            "filter": {"operator_codes": operator_codes or [], "tags": tags or []},
        }
        response = await self.api.post("/mailings", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def message_counts(self, mailing_id: int) -> dict[str, int]:
        with self.db() as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM message WHERE mailing_id = %s GROUP BY status",
                [mailing_id],
            ).fetchall()
        return {status: int(n) for status, n in rows}

    def mailing_row(self, mailing_id: int) -> dict[str, Any]:
        with self.db() as conn:
            cur = conn.execute("SELECT * FROM mailing WHERE id = %s", [mailing_id])
            names = [d.name for d in cur.description or []]
            row = cur.fetchone()
        assert row is not None
        return dict(zip(names, row, strict=True))

    async def wait_terminal(
        self, mailing_id: int, expected_total: int, timeout: float = 90
    ) -> dict[str, int]:
        async def done() -> dict[str, int] | None:
            counts = self.message_counts(mailing_id)
            total = sum(counts.values())
            finished = sum(n for s, n in counts.items() if s in TERMINAL)
            return counts if total == expected_total and finished == total else None

        counts = await wait_until(
            done, timeout=timeout, interval=0.25, message=f"mailing {mailing_id} all terminal"
        )
        assert counts is not None
        return counts

    async def wait_completed(self, mailing_id: int, timeout: float = 30) -> None:
        async def completed() -> bool:
            return self.mailing_row(mailing_id)["status"] == "completed"

        await wait_until(completed, timeout=timeout, interval=0.25, message="mailing completed")

    async def wait_delivered(self, n: int, timeout: float = 60) -> int:
        async def enough() -> int:
            count = len(self.stub.state.deliveries.seen)
            return count if count >= n else 0

        return await wait_until(enough, timeout=timeout, interval=0.05, message=f"{n} deliveries")

    # --- the provider stub ------------------------------------------------------------------

    def set_faults(self, **faults: Any) -> None:
        self.stub.state.faults = self.stub.state.faults.merged(faults)

    def stub_requests(self) -> int:
        return int(self.stub.state.requests_total)

    def delivered_count(self) -> int:
        return len(self.stub.state.deliveries.seen)

    def deliveries(self) -> dict[int, dict[str, Any]]:
        items, _ = self.stub.call(lambda: self.stub.state.deliveries.page(None, 10**8))
        return {item["id"]: item for item in items}

    def first_delivery_after(self, moment: float) -> float | None:
        """Seconds from `moment` (time.time()) to the first acceptance after it."""
        d = self.stub.state.deliveries

        def after() -> list[float]:
            times = [t for t in d.first_at if t > moment]
            return times + [last for _, last in d.repeats.values() if last > moment]

        times = self.stub.call(after)
        return round(min(times) - moment, 2) if times else None

    # --- the checks -------------------------------------------------------------------------

    async def verify(
        self,
        mailing_id: int,
        *,
        matching: int,
        max_duplicates: int = 0,
        deleted: bool = False,
        unsure_ok: bool = False,
        exclusive: bool = True,
    ) -> dict[str, Any]:
        """The invariants every scenario holds to; returns the figures.

        `unsure_ok`: a request cut off by the end time may have reached the provider anyway,
        so a delivered message may be recorded `expired` only when its last error was a timeout.
        `exclusive=False`: other mailings share the stub; only this one's deliveries count.
        """
        counts = self.message_counts(mailing_id)
        total = sum(counts.values())
        mailing = self.mailing_row(mailing_id)
        end_at = mailing["end_at"].timestamp()
        assert set(counts) <= TERMINAL, f"messages left in an open status: {counts}"
        assert total == matching, f"{total} messages for {matching} matching clients"
        with self.db() as conn:
            rows = conn.execute(
                """
                SELECT m.id, m.client_id, c.phone, m.status, coalesce(m.last_error, '')
                FROM message m JOIN client c ON c.id = m.client_id
                WHERE m.mailing_id = %s
                """,
                [mailing_id],
            ).fetchall()
            left_out = conn.execute(
                """
                SELECT count(*) FROM client c JOIN mailing mg ON mg.id = %s
                WHERE c.id <= mg.fanout_max_client_id AND c.deleted_at IS NULL
                  AND (cardinality(mg.filter_tags) = 0 OR c.tag = ANY(mg.filter_tags))
                  AND (cardinality(mg.filter_operator_codes) = 0
                       OR c.operator_code = ANY(mg.filter_operator_codes))
                  AND NOT EXISTS (
                      SELECT 1 FROM message m WHERE m.mailing_id = mg.id AND m.client_id = c.id)
                """,
                [mailing_id],
            ).fetchone()
            counters = conn.execute(
                "SELECT status, count FROM message_count WHERE mailing_id = %s AND count <> 0",
                [mailing_id],
            ).fetchall()
        assert left_out is not None and left_out[0] == 0, f"{left_out} matching clients left out"
        clients = [r[1] for r in rows]
        assert len(set(clients)) == len(clients), "a client got two messages"
        assert {s: int(n) for s, n in counters} == counts, "status counters disagree"

        delivered = self.deliveries()
        by_id = {r[0]: r for r in rows}
        if not exclusive:
            delivered = {i: d for i, d in delivered.items() if i in by_id}
        strangers = delivered.keys() - by_id.keys()
        assert not strangers, f"the provider got ids that are not this mailing's: {strangers}"
        wrong_phone = [i for i, d in delivered.items() if str(d["phone"]) != by_id[i][2]]
        assert not wrong_phone, f"delivered to the wrong phone: {wrong_phone[:10]}"
        sent = {r[0] for r in rows if r[3] == "sent"}
        missing = sent - delivered.keys()
        assert not missing, f"{len(missing)} messages marked sent but never accepted"
        unrecorded = delivered.keys() - sent
        if unsure_ok:
            unsure = {r[0] for r in rows if r[3] == "expired" and may_have_reached_provider(r[4])}
            assert unrecorded <= unsure, f"delivered but not sent: {sorted(unrecorded)[:10]}"
        else:
            assert not unrecorded, f"delivered but not marked sent: {sorted(unrecorded)[:10]}"
        after_end = sum(1 for d in delivered.values() if d["last_at"] > end_at)
        assert after_end == 0, f"{after_end} deliveries after the end time"
        duplicates = sum(d["count"] - 1 for d in delivered.values())
        # A request that timed out may have reached the provider all the same: sending it again
        # is the at-least-once no system avoids. Every other duplicate counts against the bound.
        timed_out = {r[0] for r in rows if may_have_reached_provider(r[4])}
        unexplained = sum(d["count"] - 1 for i, d in delivered.items() if i not in timed_out)
        assert unexplained <= max_duplicates, (
            f"{unexplained} duplicates > {max_duplicates} (and {duplicates - unexplained} "
            "after a request timeout)"
        )

        if not deleted:
            assert self.api is not None
            stats = (await self.api.get(f"/mailings/{mailing_id}/stats")).json()
            assert {k: v for k, v in stats["counts"].items() if v} == counts, stats
            assert stats["total"] == total

        self.figures.update(
            messages=total,
            counts=counts,
            delivered=len(delivered),
            duplicates=duplicates,
            duplicates_after_timeout=duplicates - unexplained,
            duplicate_bound=max_duplicates,
            after_end=after_end,
            provider_requests=self.stub_requests(),
        )
        return self.figures

    def assert_no_secrets_in_logs(self) -> None:
        secrets_ = {"API token": API_TOKEN, "provider token": PROVIDER_TOKEN}
        for name, text in self.all_logs().items():
            for what, secret in secrets_.items():
                assert secret not in text, f"the {what} appears in the {name} log"

    def error_lines(self) -> list[str]:
        """Unexpected error lines (not alerts) and tracebacks across every service log."""
        found = []
        for name, text in self.all_logs().items():
            for line in text.splitlines():
                if ('"level": "error"' in line and "ALERT" not in line) or "Traceback" in line:
                    found.append(f"{name}: {line[:400]}")
        return found

    def assert_none_crashed(self) -> None:
        """Every process is still running, except those the test killed (-9)."""
        crashed = {
            p.name: p.log_tail(20)
            for p in self.processes.started
            if p.process.poll() not in (None, -signal.SIGKILL)
        }
        assert not crashed, f"processes exited by themselves: {crashed}"

    def finish(self, **extra: Any) -> dict[str, Any]:
        """Check the logs and processes, print the figures, append them to the results file."""
        self.assert_no_secrets_in_logs()
        self.assert_none_crashed()
        self.figures.update(extra)
        self.figures.setdefault("error_log_lines", len(self.error_lines()))
        record = {
            "run_id": RUN_ID,
            "scenario": self.scenario,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.monotonic() - self.started_at, 1),
            **self.figures,
        }
        print(f"\nCHAOS {json.dumps(record)}")
        with RESULTS_PATH.open("a") as out:
            out.write(json.dumps(record) + "\n")
        return record


async def metric_value(proc: ServiceProcess, name: str) -> float | None:
    """One unlabelled sample from a service's /metrics (None when absent or unreachable)."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            text = (await client.get(f"{proc.metrics_url}/metrics")).text
    except httpx.HTTPError:
        return None
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@asynccontextmanager
async def open_rig(
    scenario: str,
    *,
    db_dsn: str,
    db_url: str,
    amqp_url: str,
    namespace: str,
    log_dir: Path,
    stub_token: str = PROVIDER_TOKEN,
    start_api: bool = True,
    **env: Any,
) -> AsyncIterator[Rig]:
    """A rig whose processes, stub and API client are always stopped on the way out."""
    stub = await asyncio.to_thread(ThreadedStub, StubConfig(token=stub_token))
    base_env = BASE_ENV | {
        "DATABASE_URL": db_url,
        "AMQP_URL": amqp_url,
        "AMQP_NAMESPACE": namespace,
        "PROVIDER_URL": stub.url,
        "PROVIDER_TOKEN": PROVIDER_TOKEN,
        "API_TOKENS": API_TOKEN,
    }
    base_env |= {key.upper(): str(value) for key, value in env.items()}
    processes = ProcessGroup(base_env, log_dir)
    rig = Rig(scenario, db_dsn, db_url, amqp_url, namespace, stub, processes, log_dir)
    try:
        if start_api:
            await rig.start_api()
        yield rig
    finally:
        processes.stop_all()
        if rig.api is not None:
            await rig.api.aclose()
        await asyncio.to_thread(stub.close)
        errors = rig.error_lines()
        if errors:
            print(f"\n{scenario}: error lines in the service logs ({log_dir}):")
            print("\n".join(errors[:40]))
