"""What a pipeline test and a chaos scenario do with a running deployment: start processes,
seed clients, create a mailing, read its messages back, wait for it, steer the stub. Each
keeps its own fixture (how the stub runs, where the API lives); the methods are these."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.support.rig import data
from tests.support.rig.processes import ProcessGroup, ServiceProcess
from tests.support.rig.verify import error_lines
from tests.support.waiting import wait_until


class RigBase:
    """Needs `processes`, `api` (a client of `/api/v1`, or None until started), `db()`,
    `set_faults()`, `stub_requests()` and `deliveries()` from the subclass."""

    processes: ProcessGroup
    api: httpx.AsyncClient | None
    default_text = "Hello"
    terminal_timeout = 60.0
    completed_timeout = 60.0
    wait_interval = 0.2

    def db(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def deliveries(self) -> dict[int, dict[str, Any]]:
        raise NotImplementedError

    def set_faults(self, **faults: Any) -> None:
        raise NotImplementedError

    def stub_requests(self) -> int:
        raise NotImplementedError

    # --- processes ------------------------------------------------------------------------

    def start_scheduler(self, **overrides: Any) -> ServiceProcess:
        return self.processes.start("scheduler", **overrides)

    def start_sender(self, **overrides: Any) -> ServiceProcess:
        return self.processes.start("sender", **overrides)

    async def start(
        self, schedulers: int = 1, senders: int = 1, **sender_overrides: Any
    ) -> list[ServiceProcess]:
        procs = [self.start_scheduler() for _ in range(schedulers)]
        procs += [self.start_sender(**sender_overrides) for _ in range(senders)]
        for proc in procs:
            await proc.wait_ready()
        return procs

    def all_logs(self) -> dict[str, str]:
        return {proc.name: proc.log_text() for proc in self.processes.started}

    def error_lines(self) -> list[str]:
        """Unexpected error lines (not alerts) and tracebacks across every service log."""
        return error_lines(self.all_logs())

    # --- data -----------------------------------------------------------------------------

    def seed_clients(
        self,
        count: int,
        *,
        tag: str = "",
        timezone: str = "UTC",
        first: int = 1,
        operator_code: str = "900",
    ) -> None:
        """Bulk insert; phones 79XXXXXXXXX are unique per `first..first+count-1`."""
        with self.db() as conn:
            data.seed_clients(
                conn, count, tag=tag, timezone=timezone, first=first, operator_code=operator_code
            )

    async def create_mailing(
        self,
        *,
        starts_in: float = -1.0,
        ends_in: float = 3600.0,
        text: str | None = None,
        tags: list[str] | None = None,
        operator_codes: list[str] | None = None,
        send_window: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        assert self.api is not None, "start_api() first"
        body = data.mailing_body(
            starts_in=starts_in,
            ends_in=ends_in,
            text=self.default_text if text is None else text,
            tags=tags,
            operator_codes=operator_codes,
            send_window=send_window,
        )
        response = await self.api.post("/mailings", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def message_counts(self, mailing_id: int) -> dict[str, int]:
        with self.db() as conn:
            return data.message_counts(conn, mailing_id)

    def mailing_row(self, mailing_id: int) -> dict[str, Any]:
        with self.db() as conn:
            return data.mailing_row(conn, mailing_id)

    def mailing_status(self, mailing_id: int) -> str:
        return str(self.mailing_row(mailing_id)["status"])

    async def wait_terminal(
        self, mailing_id: int, expected_total: int, timeout: float | None = None
    ) -> dict[str, int]:
        """Every one of `expected_total` messages in a terminal status; their counts."""

        async def done() -> dict[str, int] | None:
            counts = self.message_counts(mailing_id)
            return counts if data.all_terminal(counts, expected_total) else None

        counts = await wait_until(
            done,
            timeout=self.terminal_timeout if timeout is None else timeout,
            interval=self.wait_interval,
            message=f"mailing {mailing_id} all terminal",
        )
        assert counts is not None
        return counts

    async def wait_completed(self, mailing_id: int, timeout: float | None = None) -> None:
        async def completed() -> bool:
            return self.mailing_status(mailing_id) == "completed"

        await wait_until(
            completed,
            timeout=self.completed_timeout if timeout is None else timeout,
            interval=self.wait_interval,
            message="mailing completed",
        )

    async def assert_stats_agree(self, mailing_id: int) -> dict[str, int]:
        """The stats endpoint (counters) agrees with a GROUP BY over the messages."""
        assert self.api is not None
        stats = (await self.api.get(f"/mailings/{mailing_id}/stats")).json()
        truth = self.message_counts(mailing_id)
        assert {k: v for k, v in stats["counts"].items() if v} == truth, stats
        assert stats["total"] == sum(truth.values())
        return truth
