"""The chaos rig: a whole deployment per test (real api, scheduler and sender processes, the
provider stub in a thread of the test process), the checks every scenario makes, its figures.
The parts are the shared rig's (tests/support/rig): its processes, threaded stub, data helpers
and `verify_mailing`; here the chaos suite's own tokens, results file and `open_rig()`.

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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from services.provider_stub.app import StubConfig
from tests.support.database import ROOT
from tests.support.rig import env
from tests.support.rig.core import RigBase
from tests.support.rig.data import TERMINAL
from tests.support.rig.processes import ProcessGroup, ServiceProcess, free_port
from tests.support.rig.stub import ThreadedStub
from tests.support.rig.verify import verify_mailing
from tests.support.waiting import wait_until

__all__ = ["TERMINAL", "Rig", "ThreadedStub", "metric_value", "open_rig"]

RETRY_DELAYS = env.RETRY_DELAYS
# Unique per test session, so finding one in a log can only mean it leaked there.
API_TOKEN = f"chaos-api-{secrets.token_hex(12)}"
PROVIDER_TOKEN = f"chaos-provider-{secrets.token_hex(12)}"
RESULTS_PATH = Path(os.environ.get("CHAOS_RESULTS", str(ROOT / ".chaos-results.jsonl")))
RUN_ID = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
BASE_ENV = env.UNDER_FAULTS


@dataclass
class Rig(RigBase):
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

    default_text = "Chaos"
    terminal_timeout = 90.0
    completed_timeout = 30.0
    wait_interval = 0.25

    # --- processes --------------------------------------------------------------------------

    async def start_api(self, **overrides: Any) -> ServiceProcess:
        """The real API process (uvicorn), serving on `api_port`; `api` is its client."""
        self.api_port = free_port()
        proc = self.processes.start(
            "api", api_host="127.0.0.1", api_port=self.api_port, **overrides
        )
        self.api_process = proc
        await proc.wait_ready()
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}/api/v1",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30.0,
        )
        return proc

    # --- data -------------------------------------------------------------------------------

    def db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.db_dsn, autocommit=True)

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
        return self.stub.deliveries()

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
        """The invariants every scenario holds to (tests/support/rig/verify.py), and the stats
        endpoint agreeing with them unless the mailing was deleted; returns the figures."""
        with self.db() as conn:
            verdict = verify_mailing(
                conn,
                mailing_id,
                self.deliveries(),
                matching=matching,
                max_duplicates=max_duplicates,
                unsure_ok=unsure_ok,
                exclusive=exclusive,
            )
        if not deleted:
            assert self.api is not None
            stats = (await self.api.get(f"/mailings/{mailing_id}/stats")).json()
            assert {k: v for k, v in stats["counts"].items() if v} == verdict.counts, stats
            assert stats["total"] == verdict.messages
        self.figures.update(verdict.figures(), provider_requests=self.stub_requests())
        return self.figures

    def assert_no_secrets_in_logs(self) -> None:
        secrets_ = {"API token": API_TOKEN, "provider token": PROVIDER_TOKEN}
        for name, text in self.all_logs().items():
            for what, secret in secrets_.items():
                assert secret not in text, f"the {what} appears in the {name} log"

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
    **settings: Any,
) -> AsyncIterator[Rig]:
    """A rig whose processes, stub and API client are always stopped on the way out."""
    stub = await asyncio.to_thread(ThreadedStub, StubConfig(token=stub_token))
    base_env = BASE_ENV | env.service_env(
        database_url=db_url,
        amqp_url=amqp_url,
        namespace=namespace,
        provider_url=stub.url,
        provider_token=PROVIDER_TOKEN,
        api_token=API_TOKEN,
    )
    base_env |= {key.upper(): str(value) for key, value in settings.items()}
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
