"""The provider misbehaves: down for 30 s, hanging past the timeout, answering garbage and 500s,
refusing our token, too slow to finish before the end time."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.rig import PROVIDER_TOKEN, metric_value, open_rig
from tests.support.broker import queue_depth
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

OUTAGE_S = 30.0


@pytest.mark.chaos_slow
async def test_provider_down_30s_opens_the_breaker_then_everything_goes_out(
    servers: dict[str, Any],
) -> None:
    clients = 5000
    max_connections = 50
    threshold = 20
    async with open_rig(
        "provider down 30 s",
        **servers,
        breaker_failure_threshold=threshold,
        breaker_cooldown_s=1,
        breaker_max_cooldown_s=8,
    ) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=10)
        scheduler, sender = await rig.start(max_connections=max_connections)
        mailing = await rig.create_mailing()
        await rig.wait_delivered(500)

        requests_before = rig.stub_requests()
        down_since = time.monotonic()
        rig.set_faults(down=True)

        async def breaker_open_logged() -> bool:
            return "breaker open" in sender.log_text()

        async def breaker_open_metric() -> bool:
            return await metric_value(sender, "mailing_breaker_state") == 2.0

        await wait_until(breaker_open_logged, timeout=20, message="'breaker open' in the log")
        await wait_until(breaker_open_metric, timeout=10, message="mailing_breaker_state 2")
        opened_after_s = round(time.monotonic() - down_since, 2)
        await asyncio.sleep(max(OUTAGE_S - (time.monotonic() - down_since), 0))  # the outage
        requests_while_down = rig.stub_requests() - requests_before
        delivered_at_recovery = rig.delivered_count()
        # Jobs waiting in the broker at recovery, and leases the scheduler re-published meanwhile.
        queued_jobs = await queue_depth(rig.namespace, "send")
        reaped = await metric_value(scheduler, 'mailing_messages_queued_total{reason="reaped"}')
        back_at = time.time()
        rig.set_faults(down=False)

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=120)
        assert counts == {"sent": clients}
        await rig.wait_completed(mailing["id"])
        # Before opening: the requests already under way plus the failures that open it; after:
        # one probe per half-open batch, the cooldown doubling from 1 s to 8 s.
        bound = max_connections + threshold + 60
        assert requests_while_down <= bound, f"{requests_while_down} requests to a dead provider"
        assert delivered_at_recovery < clients
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        rig.finish(
            outage_s=OUTAGE_S,
            breaker_opened_after_s=opened_after_s,
            requests_while_down=requests_while_down,
            requests_while_down_bound=bound,
            send_queue_at_recovery=queued_jobs,
            republished_while_down=reaped,
            recover_s=rig.first_delivery_after(back_at),
        )


@pytest.mark.chaos_slow
async def test_hangs_garbage_and_500s_are_retried_without_a_hot_loop(
    servers: dict[str, Any],
) -> None:
    clients = 5000
    async with open_rig(
        "provider hangs / garbage / 500s", **servers, provider_timeout_s=1, sending_lease_s=5
    ) as rig:
        rig.seed_clients(clients)
        # 30% 500s, 10% 200s with a body that is not {"code": 0, "message": "OK"}, 3% of
        # requests hang for 5 s, past the 1 s request timeout.
        rig.set_faults(error_rate=0.3, garbage_rate=0.1, hang_rate=0.03, hang_seconds=5)
        await rig.start(max_connections=100)
        started = time.time()
        mailing = await rig.create_mailing()

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=180)
        assert counts == {"sent": clients}
        by_outcome = dict(rig.stub.state.by_outcome)
        assert by_outcome["error"] and by_outcome["garbage"] and by_outcome["hang"]
        requests = rig.stub_requests()
        # 43% failures: about 1.75 requests per message expected; 3 would mean a hot loop.
        assert requests < 3 * clients, f"{requests} requests for {clients} messages"
        with rig.db() as conn:
            max_attempts, attempts = conn.execute(
                "SELECT max(attempts), sum(attempts) FROM message WHERE mailing_id = %s",
                [mailing["id"]],
            ).fetchone()  # type: ignore[misc]
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        rig.finish(
            requests_per_message=round(requests / clients, 2),
            by_outcome={k: v for k, v in by_outcome.items() if v},
            max_attempts=max_attempts,
            attempts_recorded=int(attempts),
            send_s=round(time.time() - started, 1),
        )


async def test_provider_refusing_our_token_pauses_until_the_token_file_changes(
    servers: dict[str, Any], tmp_path: Path
) -> None:
    clients = 5000
    token_file = tmp_path / "provider-token"
    token_file.write_text(f"wrong-{secrets.token_hex(8)}\n")
    async with open_rig(
        "provider 401, token rotated",
        **servers,
        provider_token="",  # the file is the only source
        provider_token_file=token_file,
    ) as rig:
        rig.seed_clients(clients)
        _, sender = await rig.start(max_connections=50)
        mailing = await rig.create_mailing()

        async def alerted() -> bool:
            return "ALERT" in sender.log_text()

        await wait_until(alerted, timeout=30, message="an ALERT in the sender log")
        assert await metric_value(sender, "mailing_breaker_state") in (1.0, 2.0)
        refused_from = rig.stub_requests()
        await asyncio.sleep(5)  # the token stays wrong for 5 s more
        refused_while_paused = rig.stub_requests() - refused_from
        assert rig.delivered_count() == 0
        counts = rig.message_counts(mailing["id"])
        assert "failed" not in counts, counts
        with rig.db() as conn:
            burnt = conn.execute(
                "SELECT count(*) FROM message WHERE mailing_id = %s AND attempts > 0",
                [mailing["id"]],
            ).fetchone()
        assert burnt == (0,), "a refused token must not spend a message's attempts"
        # The breaker probes with one request per half-open batch, backing off to 2 s.
        assert refused_while_paused < 50, f"{refused_while_paused} requests while paused"

        rotated_at = time.time()
        token_file.write_text(PROVIDER_TOKEN + "\n")  # no restart
        counts = await rig.wait_terminal(mailing["id"], clients, timeout=120)
        assert counts == {"sent": clients}
        assert sender.process.poll() is None, "the sender kept running"
        unauthorized = rig.stub.state.by_outcome["unauthorized"]
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        rig.finish(
            unauthorized_requests=unauthorized,
            requests_in_5s_paused=refused_while_paused,
            recover_s=rig.first_delivery_after(rotated_at),
        )


async def test_end_time_arriving_mid_mailing_stops_delivery(servers: dict[str, Any]) -> None:
    clients = 5000
    async with open_rig("end time mid-mailing (slow provider)", **servers) as rig:
        rig.seed_clients(clients)
        # 10 connections at 100 ms: about 100 messages/s, far too slow for 5,000 in 8 s.
        rig.set_faults(latency_ms=100, jitter_ms=50)
        await rig.start(max_connections=10)
        mailing = await rig.create_mailing(ends_in=8.0)

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=90)
        assert set(counts) <= {"sent", "expired"}, counts
        assert counts.get("sent", 0) > 0, "some messages go out before the end"
        assert counts.get("expired", 0) > 0, "the end time came mid-mailing"
        await rig.wait_completed(mailing["id"])
        figures = await rig.verify(mailing["id"], matching=clients, unsure_ok=True)
        end_at = rig.mailing_row(mailing["id"])["end_at"].timestamp()
        last = max(d["last_at"] for d in rig.deliveries().values())
        assert last <= end_at
        rig.finish(
            last_delivery_before_end_s=round(end_at - last, 2),
            delivered_not_sent=figures["delivered"] - counts.get("sent", 0),
        )
