"""The SMPP client (services/sender/smpp.py) against the SMSC simulator: binds, texts, receipts,
replies, validity, error classes, dropped binds and a wrong password."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.sender.smpp import (
    Delivery,
    Receipt,
    Reply,
    SmppClient,
    SubmitOutcome,
    parse_receipt,
)
from shared.providers import SmppProvider
from tests.support.rig.processes import free_port
from tests.support.smsc import PASSWORD, SYSTEM_ID, Smsc, running_smsc
from tests.support.waiting import wait_until

PHONE = "79001234567"


def provider(smsc: Smsc, **changes: Any) -> SmppProvider:
    values: dict[str, Any] = {
        "name": "aggregator",
        "host": "127.0.0.1",
        "port": smsc.port,
        "system_id": SYSTEM_ID,
        "password": SecretStr(PASSWORD),
        "source_addr": "MAILING",
        "window": 8,
        "enquire_link_s": 5.0,
    } | changes
    return SmppProvider(**values)


class Deliveries(list[Delivery]):
    async def __call__(self, delivery: Delivery) -> None:
        self.append(delivery)

    def receipts(self) -> list[Receipt]:
        return [d for d in self if isinstance(d, Receipt)]

    def replies(self) -> list[Reply]:
        return [d for d in self if isinstance(d, Reply)]


async def bound_client(
    smsc: Smsc, make: Callable[..., SmppClient], **changes: Any
) -> tuple[SmppClient, Deliveries]:
    deliveries = Deliveries()
    client = make(provider(smsc, **changes), deliveries)
    assert await client.wait_bound(10.0), client.state
    return client, deliveries


async def eventually(check: Callable[[], Any], message: str, timeout: float = 10.0) -> Any:
    async def probe() -> Any:
        return check()

    return await wait_until(probe, timeout=timeout, message=message)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_short_latin_text_is_accepted_and_delivered(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, deliveries = await bound_client(smsc, client_factory)
    accepted_before = sample(
        "mailing_provider_messages_total", provider="aggregator", outcome="accepted"
    )
    delivered_before = sample(
        "mailing_provider_deliveries_total", provider="aggregator", kind="delivered"
    )
    assert sample("mailing_provider_binds_up", provider="aggregator") == 1
    result = await client.submit(PHONE, "Hello from the mailing service")
    assert result.outcome == SubmitOutcome.ACCEPTED, result
    assert result.parts == 1 and result.message_id
    [received] = smsc.messages()
    assert received["id"] == result.message_id
    assert (received["to"], received["from"]) == (PHONE, "MAILING")
    assert received["text"] == "Hello from the mailing service"
    assert received["data_coding"] == 0 and received["part"] is None
    [receipt] = await eventually(deliveries.receipts, "the receipt")
    assert receipt == Receipt("aggregator", result.message_id, "DELIVRD", "000")
    assert receipt.final and receipt.delivered
    assert (
        sample("mailing_provider_messages_total", provider="aggregator", outcome="accepted")
        == accepted_before + 1
    )
    assert (
        sample("mailing_provider_deliveries_total", provider="aggregator", kind="delivered")
        == delivered_before + 1
    )


async def test_long_cyrillic_text_goes_as_parts_with_one_reference(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, deliveries = await bound_client(smsc, client_factory)
    text = "Привет! Это длинное сообщение рассылки. " * 4  # 160 characters: 3 UCS-2 parts
    result = await client.submit(PHONE, text)
    assert result.outcome == SubmitOutcome.ACCEPTED, result
    assert result.parts == 3 and len(result.message_ids) == 3
    parts = smsc.messages()
    assert [p["part"]["seq"] for p in parts] == [1, 2, 3]
    assert {p["part"]["ref"] for p in parts} == {parts[0]["part"]["ref"]}
    assert {p["part"]["total"] for p in parts} == {3}
    assert {p["data_coding"] for p in parts} == {8}
    assert {p["esm_class"] & 0x40 for p in parts} == {0x40}
    assert "".join(p["text"] for p in parts) == text
    stats = smsc.stats()
    assert (stats["messages"], stats["parts"], stats["multipart_messages"]) == (1, 3, 1)
    # One receipt per message, for its first part (the id the message is known by), as Kannel
    # asks: the SMSC is asked for no receipt of the other parts.
    assert [p["registered_delivery"] & 0x03 for p in parts] == [1, 0, 0]
    receipts = await eventually(lambda: deliveries.receipts(), "the receipt")
    assert [r.message_id for r in receipts] == [result.message_id]


async def test_long_latin_text_goes_as_gsm7_parts(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, _ = await bound_client(smsc, client_factory)
    text = "Sale [today] only: 50% off {everything} for €10! " * 4  # 200 chars, escapes inside
    result = await client.submit(PHONE, text)
    assert result.outcome == SubmitOutcome.ACCEPTED and result.parts == 2, result
    parts = smsc.messages()
    assert {p["data_coding"] for p in parts} == {0}
    assert "".join(p["text"] for p in parts) == text


async def test_validity_period_reaches_the_smsc_and_expires_the_message(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, deliveries = await bound_client(smsc, client_factory)
    smsc.faults(receipt_delay_ms=60_000)  # the SMSC would deliver a minute later
    end = datetime.now(UTC) + timedelta(seconds=1)
    result = await client.submit(PHONE, "Ends soon", valid_until=end)
    assert result.outcome == SubmitOutcome.ACCEPTED, result
    [received] = smsc.messages()
    sent_validity = datetime.fromisoformat(received["validity"].replace("Z", "+00:00"))
    assert abs((sent_validity - end).total_seconds()) < 0.2
    [receipt] = await eventually(deliveries.receipts, "the EXPIRED receipt")
    assert (receipt.stat, receipt.delivered, receipt.final) == ("EXPIRED", False, True)
    # A message already past its end time is never sent.
    late = await client.submit(
        PHONE, "Too late", valid_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert late.outcome == SubmitOutcome.EXPIRED and len(smsc.messages()) == 1


async def test_throttling_slows_down_and_permanent_errors_carry_the_code(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, _ = await bound_client(smsc, client_factory)
    smsc.faults(throttle_next=1, queue_full_next=1)
    first = await client.submit(PHONE, "one")
    assert first.outcome == SubmitOutcome.THROTTLED and first.error == "ESME_RTHROTTLED", first
    assert first.retry_after_s and first.retry_after_s > 0
    second = await client.submit(PHONE, "two")
    assert second.outcome == SubmitOutcome.THROTTLED and second.error == "ESME_RMSGQFUL", second
    third = await client.submit(PHONE, "three")
    assert third.outcome == SubmitOutcome.ACCEPTED, third

    smsc.faults(reject_numbers=["79000000000"])
    rejected = await client.submit("79000000000", "nobody")
    assert rejected.outcome == SubmitOutcome.PERMANENT, rejected
    assert (rejected.error, rejected.command_status) == ("ESME_RINVDSTADR", 0x0B)


async def test_a_throttled_part_of_a_long_text_is_retried_in_place(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, _ = await bound_client(smsc, client_factory, window=1)
    smsc.faults(throttle_above_tps=2)  # the third part of a second is refused
    result = await client.submit(PHONE, "x" * 400)  # 3 parts
    assert result.outcome == SubmitOutcome.ACCEPTED and result.parts == 3, result
    assert smsc.stats()["throttled"] >= 1
    assert smsc.stats()["multipart_messages"] == 1


async def test_undelivered_and_text_only_receipts(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, deliveries = await bound_client(smsc, client_factory)
    smsc.faults(undeliverable_numbers=[PHONE], receipt_tlvs=False)
    result = await client.submit(PHONE, "to a dead phone")
    [receipt] = await eventually(deliveries.receipts, "the receipt")
    assert receipt.message_id == result.message_id
    assert (receipt.stat, receipt.delivered, receipt.final, receipt.error_code) == (
        "UNDELIV",
        False,
        True,
        "001",
    )


async def test_receipts_before_the_response_twice_and_for_unknown_ids_reach_the_callback(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, deliveries = await bound_client(smsc, client_factory)
    smsc.faults(receipt_before_response=True, duplicate_receipts=True)
    result = await client.submit(PHONE, "early and twice")
    assert result.outcome == SubmitOutcome.ACCEPTED
    # The receipts came before submit() returned: the callback must keep them until the id is known.
    receipts = await eventually(
        lambda: len(deliveries.receipts()) == 2 and deliveries.receipts(), "2"
    )
    assert {r.message_id for r in receipts} == {result.message_id}
    unknown = smsc.unknown_receipt()
    await eventually(lambda: any(r.message_id == unknown for r in deliveries.receipts()), "unknown")


async def test_replies_from_phones_are_delivered_as_replies(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    _, deliveries = await bound_client(smsc, client_factory)
    smsc.mo(PHONE, "СТОП")
    smsc.mo("79007654321", "stop please")
    replies = await eventually(lambda: len(deliveries.replies()) == 2 and deliveries.replies(), "2")
    assert {(r.source, r.text) for r in replies} == {
        (PHONE, "СТОП"),
        ("79007654321", "stop please"),
    }
    assert deliveries.receipts() == []


async def test_a_dropped_bind_reconnects_and_pending_receipts_arrive(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, deliveries = await bound_client(smsc, client_factory, binds=2)
    smsc.faults(no_receipts=True)
    before = await client.submit(PHONE, "before the drop")
    assert before.outcome == SubmitOutcome.ACCEPTED
    binds_before = sum(b.binds_made for b in client.binds)
    assert smsc.drop_binds() == 2
    await eventually(lambda: sum(b.binds_made for b in client.binds) >= binds_before + 2, "rebind")
    await eventually(lambda: client.state["binds_up"] == 2, "both binds up")
    smsc.faults(no_receipts=False)
    after = await client.submit(PHONE, "after the drop")
    assert after.outcome == SubmitOutcome.ACCEPTED, after
    receipts = await eventually(
        lambda: len(deliveries.receipts()) >= 2 and deliveries.receipts(), "2"
    )
    assert {r.message_id for r in receipts} == {before.message_id, after.message_id}


async def test_requests_in_flight_when_the_bind_drops_are_unknown_not_lost(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, _ = await bound_client(smsc, client_factory, window=4)
    smsc.faults(response_delay_ms=3000)
    sends = [asyncio.create_task(client.submit(PHONE, f"in flight {i}")) for i in range(4)]
    await eventually(lambda: smsc.stats()["submits"] == 4, "4 submits at the SMSC")
    smsc.drop_binds()
    results = await asyncio.gather(*sends)
    assert {r.outcome for r in results} == {SubmitOutcome.UNKNOWN}, results
    # While no bind is up the client says so at once: the route's next provider takes over.
    assert await client.wait_bound(10.0)


async def test_a_wrong_password_leaves_the_provider_down(
    smsc: Smsc, client_factory: Callable[..., SmppClient], capfd: pytest.CaptureFixture[str]
) -> None:
    deliveries = Deliveries()
    refused_before = sample(
        "mailing_provider_bind_failures_total", provider="aggregator", reason="ESME_RINVPASWD"
    )
    client = client_factory(provider(smsc, password=SecretStr("wr0ngpw")), deliveries)
    await eventually(lambda: client.state["bind_error"] == "ESME_RINVPASWD", "bind refused")
    assert (
        sample(
            "mailing_provider_bind_failures_total", provider="aggregator", reason="ESME_RINVPASWD"
        )
        > refused_before
    )
    assert not client.can_take
    result = await client.submit(PHONE, "nobody listens")
    assert result.outcome == SubmitOutcome.UNAVAILABLE
    assert smsc.stats()["bind_failures"] >= 1 and smsc.stats()["submits"] == 0
    assert "wr0ngpw" not in repr(client.provider) + str(client.state)
    logged = capfd.readouterr()
    assert "ESME_RINVPASWD" in logged.out + logged.err  # said, without the password
    assert "wr0ngpw" not in logged.out + logged.err


async def test_close_drains_the_window_then_unbinds(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, _ = await bound_client(smsc, client_factory, window=4)
    smsc.faults(response_delay_ms=300)
    sends = [asyncio.create_task(client.submit(PHONE, f"draining {i}")) for i in range(4)]
    await eventually(lambda: smsc.stats()["submits"] == 4, "4 submits at the SMSC")
    await client.close(drain_timeout_s=5.0)
    results = await asyncio.gather(*sends)
    assert {r.outcome for r in results} == {SubmitOutcome.ACCEPTED}, results
    await eventually(lambda: smsc.bound() == 0, "unbound")
    late = await client.submit(PHONE, "after close")
    assert late.outcome == SubmitOutcome.UNAVAILABLE


def test_parse_receipt_prefers_tlvs_and_falls_back_to_the_text() -> None:
    text = (
        "id:123 sub:001 dlvrd:001 submit date:2612070000 done date:2612070001"
        " stat:DELIVRD err:000 text:hi"
    )
    assert parse_receipt("p", {}, text) == Receipt("p", "123", "DELIVRD", "000")
    assert parse_receipt("p", {0x001E: "abc", 0x0427: 5}, text) == Receipt(
        "p", "abc", "UNDELIV", "000"
    )
    assert parse_receipt("p", {}, "no id here") is None
    intermediate = parse_receipt("p", {0x001E: "x", 0x0427: 1}, "")
    assert intermediate is not None and not intermediate.final


async def test_the_window_bounds_submits_awaiting_a_response(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    client, _ = await bound_client(smsc, client_factory, window=3)
    smsc.faults(response_delay_ms=100)
    results = await asyncio.gather(*(client.submit(PHONE, f"windowed {i}") for i in range(12)))
    assert {r.outcome for r in results} == {SubmitOutcome.ACCEPTED}
    assert smsc.stats()["max_in_flight"] == 3


async def test_a_receipt_whose_handler_fails_is_not_acknowledged_and_comes_again(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    seen: list[Delivery] = []

    async def store_fails_once(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) == 1:
            raise RuntimeError("database unavailable")

    client = client_factory(provider(smsc), store_fails_once)
    assert await client.wait_bound(10.0)
    smsc.faults(deliver_ack_timeout_ms=300)
    result = await client.submit(PHONE, "stored on the second try")
    ours = lambda: [d for d in seen if isinstance(d, Receipt) and d.message_id == result.message_id]  # noqa: E731
    await eventually(lambda: len(ours()) == 2, "the receipt again")
    await eventually(lambda: smsc.stats()["receipts_acked"] == 1, "acknowledged once")
    assert smsc.stats()["deliver_timeouts"] == 1


async def test_slow_receipt_handlers_run_side_by_side(
    smsc: Smsc, client_factory: Callable[..., SmppClient]
) -> None:
    running = 0
    most = 0
    release = asyncio.Event()
    handled: list[Delivery] = []

    async def slow_store(delivery: Delivery) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        handled.append(delivery)

    client = client_factory(provider(smsc), slow_store)
    assert await client.wait_bound(10.0)
    await asyncio.gather(*(client.submit(PHONE, f"receipt {i}") for i in range(5)))
    # All five receipts are in the handler at once: none waits for the one before.
    await eventually(lambda: most == 5, "five handlers at once")
    assert smsc.stats()["receipts_acked"] == 0  # nothing acknowledged before it is stored
    release.set()
    await eventually(lambda: smsc.stats()["receipts_acked"] == 5, "five acknowledged")
    assert len(handled) == 5


async def test_an_smsc_down_at_start_is_bound_when_it_comes_up(
    client_factory: Callable[..., SmppClient], tmp_path: Path
) -> None:
    port = free_port()
    deliveries = Deliveries()
    client = client_factory(
        SmppProvider(
            name="late",
            host="127.0.0.1",
            port=port,
            system_id=SYSTEM_ID,
            password=SecretStr(PASSWORD),
            source_addr="MAILING",
        ),
        deliveries,
    )
    # Nobody listens: the provider cannot take messages, and says so at once.
    result = await client.submit(PHONE, "nobody there")
    assert result.outcome == SubmitOutcome.UNAVAILABLE and not client.can_take
    with running_smsc(tmp_path, port=port) as late_smsc:
        assert await client.wait_bound(15.0), client.state
        result = await client.submit(PHONE, "there now")
        assert result.outcome == SubmitOutcome.ACCEPTED, result
        await eventually(deliveries.receipts, "its receipt")
        assert late_smsc.stats()["messages"] == 1
    # The SMSC goes away again: the bind goes down and the provider says so.
    await eventually(lambda: not client.can_take, "bind down")
