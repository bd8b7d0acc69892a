"""End-to-end fixtures: real scheduler and sender processes, the provider stub, the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from services.api.app import create_app
from services.api.events import AmqpEvents
from services.provider_stub.app import RunningStub, start_stub
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.processes import ProcessGroup, ServiceProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

RETRY_DELAYS = [0.2, 0.5, 1.0, 2.0]
TERMINAL = ("sent", "failed", "expired", "cancelled")


@dataclass
class Pipeline:
    db_name: str
    namespace: str
    stub: RunningStub
    api: httpx.AsyncClient
    processes: ProcessGroup

    # --- processes --------------------------------------------------------------------------

    def start_scheduler(self, **overrides: Any) -> ServiceProcess:
        return self.processes.start("scheduler", **overrides)

    def start_sender(self, **overrides: Any) -> ServiceProcess:
        return self.processes.start("sender", **overrides)

    async def start(self, schedulers: int = 1, senders: int = 1, **sender_overrides: Any) -> None:
        procs = [self.start_scheduler() for _ in range(schedulers)]
        procs += [self.start_sender(**sender_overrides) for _ in range(senders)]
        for proc in procs:
            await proc.wait_ready()

    # --- data -------------------------------------------------------------------------------

    def seed_clients(
        self, count: int, *, tag: str = "", timezone: str = "UTC", first: int = 1
    ) -> None:
        """Bulk insert; phones 7900XXXXXXX are unique per `first..first+count-1`."""
        with database.connect(self.db_name) as conn:
            conn.execute(
                """
                INSERT INTO client (phone, operator_code, tag, timezone)
                SELECT '79' || lpad(g::text, 9, '0'), '900', %s, %s
                FROM generate_series(%s::bigint, %s::bigint) AS g
                """,
                [tag, timezone, first, first + count - 1],
            )

    async def create_mailing(
        self,
        *,
        starts_in: float = -1.0,
        ends_in: float = 3600.0,
        text: str = "Hello",
        tags: list[str] | None = None,
        send_window: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "start_at": (now + timedelta(seconds=starts_in)).isoformat(),
            "end_at": (now + timedelta(seconds=ends_in)).isoformat(),
            "text": text,
            "filter": {"operator_codes": [], "tags": tags or []},
        }
        if send_window is not None:
            body["send_window"] = send_window
        response = await self.api.post("/mailings", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def message_counts(self, mailing_id: int) -> dict[str, int]:
        with database.connect(self.db_name) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM message WHERE mailing_id = %s GROUP BY status",
                [mailing_id],
            ).fetchall()
        return {status: int(n) for status, n in rows}

    def mailing_status(self, mailing_id: int) -> str:
        with database.connect(self.db_name) as conn:
            row = conn.execute("SELECT status FROM mailing WHERE id = %s", [mailing_id]).fetchone()
        assert row is not None
        return str(row[0])

    async def wait_terminal(
        self, mailing_id: int, expected_total: int, timeout: float = 60
    ) -> dict[str, int]:
        async def done() -> dict[str, int] | None:
            counts = self.message_counts(mailing_id)
            finished = sum(counts.get(s, 0) for s in TERMINAL)
            total = sum(counts.values())
            return counts if total == expected_total and finished == total else None

        return await wait_until(
            done, timeout=timeout, interval=0.2, message=f"mailing {mailing_id} terminal"
        )

    async def wait_completed(self, mailing_id: int, timeout: float = 60) -> None:
        async def completed() -> bool:
            return self.mailing_status(mailing_id) == "completed"

        await wait_until(completed, timeout=timeout, interval=0.2, message="mailing completed")

    async def assert_stats_agree(self, mailing_id: int) -> dict[str, int]:
        """The stats endpoint (counters) agrees with a GROUP BY over the messages."""
        stats = (await self.api.get(f"/mailings/{mailing_id}/stats")).json()
        truth = self.message_counts(mailing_id)
        assert {k: v for k, v in stats["counts"].items() if v} == truth
        assert stats["total"] == sum(truth.values())
        return truth

    def deliveries(self) -> dict[int, dict[str, Any]]:
        """What the stub accepted: message id -> {phone, text, count, first_at, last_at}."""
        items, _ = self.stub.state.deliveries.page(None, 10**8)
        return {item["id"]: item for item in items}

    def set_faults(self, **faults: Any) -> None:
        self.stub.state.faults = self.stub.state.faults.merged(faults)

    def stub_requests(self) -> int:
        return int(self.stub.state.requests_total)


@pytest.fixture
async def pipeline(clean_db: str, tmp_path: Path) -> AsyncIterator[Pipeline]:
    namespace = new_namespace()
    stub = await start_stub()
    base_env = {
        "DATABASE_URL": database.sqlalchemy_url(clean_db),
        "AMQP_URL": AMQP_URL,
        "AMQP_NAMESPACE": namespace,
        "PROVIDER_URL": stub.url,
        "PROVIDER_TOKEN": "stub-token",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "POLL_INTERVAL_S": "0.5",
        "LEASE_TTL_S": "5",
        "SENDING_LEASE_S": "5",
        "PROVIDER_TIMEOUT_S": "2",
        "END_SAFETY_MARGIN_S": "0.3",
        "RETRY_DELAYS_S": ",".join(str(d) for d in RETRY_DELAYS),
        "BREAKER_COOLDOWN_S": "0.5",
        "BREAKER_MAX_COOLDOWN_S": "2",
        "DB_POOL_SIZE": "5",
    }
    processes = ProcessGroup(base_env, tmp_path)
    settings = ApiSettings(
        database_url=database.sqlalchemy_url(clean_db),
        amqp_url=AMQP_URL,
        amqp_namespace=namespace,
        api_tokens=[SecretStr(ADMIN_TOKEN)],
        db_pool_size=3,
    )
    app = create_app(settings, AmqpEvents(AMQP_URL, namespace))
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://api.test/api/v1",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as api:
                yield Pipeline(clean_db, namespace, stub, api, processes)
    finally:
        processes.stop_all()
        await stub.close()
        await delete_namespace(namespace, RETRY_DELAYS)
        for proc in processes.started:
            for line in proc.log_text().splitlines():
                if '"level": "error"' in line and "ALERT" not in line:
                    print(f"{proc.name}: {line}")
