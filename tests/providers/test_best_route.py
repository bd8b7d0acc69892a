"""`via: best [...]` with two real providers: two aggregator accounts on the SMSC simulator,
one delivering far better than the other, then collapsing. Receipts feed the rates as they
come back over SMPP; the better provider carries the traffic, the other keeps a scouting
share, and the collapse moves the traffic (half-life shortened to keep the test short)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from pydantic import SecretStr

from services.sender.smpp import Delivery, Receipt, SmppClient, SubmitOutcome
from shared.domain.best_route import DeliveryRates, choose
from shared.providers import SmppProvider
from tests.support.smsc import PASSWORD, SECOND_PASSWORD, SECOND_SYSTEM_ID, SYSTEM_ID, Smsc
from tests.support.waiting import wait_until

OPERATOR = "900"


async def test_best_route_follows_the_measured_delivered_rate(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    rates = DeliveryRates(half_life_s=1.0)
    sent_by: dict[str, str] = {}  # SMSC message id -> provider
    early: list[Receipt] = []

    async def on_receipt(delivery: Delivery) -> None:
        if not isinstance(delivery, Receipt) or not delivery.final:
            return
        if delivery.message_id not in sent_by:
            early.append(delivery)  # before its submit_sm_resp was seen: kept, counted later
            return
        rates.record(delivery.provider, OPERATOR, delivered=delivery.delivered)

    def provider(name: str, system_id: str, password: str) -> SmppProvider:
        return SmppProvider(
            name=name,
            host="127.0.0.1",
            port=smsc.port,
            system_id=system_id,
            password=SecretStr(password),
            source_addr="MAILING",
        )

    clients = {
        "good": client_factory(provider("good", SYSTEM_ID, PASSWORD), on_receipt),
        "poor": client_factory(provider("poor", SECOND_SYSTEM_ID, SECOND_PASSWORD), on_receipt),
    }
    for client in clients.values():
        assert await client.wait_bound(10.0)
    smsc.faults(
        receipt_delay_ms=20, undelivered_ratio_by_account={SYSTEM_ID: 0.05, SECOND_SYSTEM_ID: 0.5}
    )
    chosen: list[str] = []
    rng = random.Random(19)
    stop = asyncio.Event()

    async def traffic() -> None:
        number = 0
        while not stop.is_set():
            name = choose(["poor", "good"], OPERATOR, rates, explore=0.1, rng=rng)[0]
            number += 1
            result = await clients[name].submit(f"7900{number:07d}", "best route")
            assert result.outcome == SubmitOutcome.ACCEPTED, result
            sent_by[result.message_ids[0]] = name
            chosen.append(name)
            for receipt in [r for r in early if r.message_id in sent_by]:
                early.remove(receipt)
                rates.record(receipt.provider, OPERATOR, delivered=receipt.delivered)

    def share(name: str, last: int = 100) -> float:
        recent = chosen[-last:]
        return recent.count(name) / len(recent) if len(recent) == last else 0.0

    sender = asyncio.create_task(traffic())
    try:
        # Listed second, the better provider takes the traffic once receipts show it.
        async def good_leads() -> bool:
            return share("good") > 0.8

        await wait_until(good_leads, timeout=60, message="the good provider carrying the traffic")
        assert "poor" in chosen[-300:]  # scouted all along
        smsc.faults(undelivered_ratio_by_account={SYSTEM_ID: 1.0, SECOND_SYSTEM_ID: 0.5})
        mark = len(chosen)

        async def poor_leads() -> bool:
            return len(chosen) > mark + 100 and share("poor") > 0.8

        await wait_until(poor_leads, timeout=60, message="the traffic leaving the collapsed one")
    finally:
        stop.set()
        await sender
