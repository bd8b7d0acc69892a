"""RabbitMQ and PostgreSQL restarted mid-mailing: every service reconnects by itself and the
mailing completes. Each runs on a private server the test starts (the shared ones are never
stopped) and always stops and removes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.rig import Rig, open_rig
from tests.support.broker import AMQP_URL
from tests.support.private_servers import PrivatePostgres, PrivateRabbitMQ

pytestmark = pytest.mark.pipeline

DB_OUTAGE_S = 3.0


async def _all_ready_again(rig: Rig) -> None:
    """No process crashed, and each one reports ready (database and broker) by itself."""
    dead = {p.name: p.log_tail(30) for p in rig.processes.started if p.process.poll() is not None}
    assert not dead, f"crashed: {dead}"
    for proc in rig.processes.started:
        await proc.wait_ready(timeout=60)


@pytest.mark.chaos_slow
async def test_rabbitmq_restart_mid_mailing(
    servers: dict[str, Any], private_rabbitmq: PrivateRabbitMQ
) -> None:
    clients = 6000
    async with open_rig(
        "RabbitMQ restart", **(servers | {"amqp_url": private_rabbitmq.amqp_url})
    ) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=20)
        await rig.start(max_connections=20)
        mailing = await rig.create_mailing()
        await rig.wait_delivered(1000)

        sending_at_stop = rig.message_counts(mailing["id"]).get("sending", 0)
        stopped_at = time.monotonic()
        await asyncio.to_thread(private_rabbitmq.stop)
        delivered_at_stop = rig.delivered_count()
        await asyncio.to_thread(private_rabbitmq.start)
        outage_s = round(time.monotonic() - stopped_at, 1)
        back_at = time.time()

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=150)
        assert counts == {"sent": clients}
        await rig.wait_completed(mailing["id"])
        await _all_ready_again(rig)
        assert delivered_at_stop < clients
        await rig.verify(mailing["id"], matching=clients, max_duplicates=sending_at_stop)
        rig.finish(
            outage_s=outage_s,
            sending_at_stop=sending_at_stop,
            delivered_at_stop=delivered_at_stop,
            recover_s=rig.first_delivery_after(back_at),
        )


async def test_postgres_restart_mid_mailing(
    private_postgres: tuple[PrivatePostgres, str], namespace: str, tmp_path: Path
) -> None:
    cluster, name = private_postgres
    clients = 6000
    async with open_rig(
        "PostgreSQL restart",
        db_dsn=cluster.dsn(name),
        db_url=cluster.sqlalchemy_url(name),
        amqp_url=AMQP_URL,
        namespace=namespace,
        log_dir=tmp_path,
        # Longer than the outage: a claimed message stays with its sender throughout.
        sending_lease_s=15,
    ) as rig:
        rig.seed_clients(clients)
        rig.set_faults(latency_ms=20)
        await rig.start(max_connections=20)
        mailing = await rig.create_mailing()
        await rig.wait_delivered(1000)

        sending_at_stop = rig.message_counts(mailing["id"]).get("sending", 0)
        stopped_at = time.monotonic()
        await asyncio.to_thread(cluster.stop, "fast")
        delivered_at_stop = rig.delivered_count()
        await asyncio.sleep(DB_OUTAGE_S)  # the outage
        await asyncio.to_thread(cluster.start)
        outage_s = round(time.monotonic() - stopped_at, 1)
        back_at = time.time()

        counts = await rig.wait_terminal(mailing["id"], clients, timeout=150)
        assert counts == {"sent": clients}
        await rig.wait_completed(mailing["id"])
        await _all_ready_again(rig)
        assert delivered_at_stop < clients
        await rig.verify(mailing["id"], matching=clients, max_duplicates=0)
        rig.finish(
            outage_s=outage_s,
            sending_at_stop=sending_at_stop,
            delivered_at_stop=delivered_at_stop,
            recover_s=rig.first_delivery_after(back_at),
        )
