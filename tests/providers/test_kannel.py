"""The Kannel client (services/sender/kannel.py) through Debian's Kannel (bearerbox + smsbox,
scripts/kannel.py) to the SMSC simulator, receipts back through the dlr-url to a local server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from scripts.kannel import Kannel, KannelAccount, KannelPorts, running_kannel
from services.sender.curl import CurlMulti
from services.sender.kannel import (
    DLR_DELIVERED,
    DLR_UNDELIVERED,
    KannelClient,
    KannelReceipt,
    callback_signature,
    parse_callback,
    validity_minutes,
)
from services.sender.smpp import SubmitOutcome
from shared.providers import KannelProvider
from tests.support.rig.processes import free_port
from tests.support.smsc import (
    KANNEL2_PASSWORD,
    KANNEL2_SYSTEM_ID,
    KANNEL_PASSWORD,
    KANNEL_SYSTEM_ID,
    Smsc,
)
from tests.support.waiting import wait_until

PHONE = "79001234567"
USERNAME, PASSWORD, CALLBACK_SECRET = "mailing", "kannel-secret", "callback-secret"


@pytest.fixture(scope="session")
def kannel(smsc_process: Smsc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kannel]:
    account = KannelAccount(
        "127.0.0.1", smsc_process.port, KANNEL_SYSTEM_ID, KANNEL_PASSWORD, USERNAME, PASSWORD
    )
    with running_kannel(account, tmp_path_factory.mktemp("kannel")) as rig:
        yield rig


class Callbacks:
    """The api's stand-in: takes dlr-url calls and checks them as the endpoint will."""

    def __init__(self, provider: KannelProvider) -> None:
        self.provider = provider
        self.receipts: list[KannelReceipt] = []
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        assert request.match_info["provider"] == self.provider.name
        receipt = parse_callback(self.provider, dict(request.query))
        if receipt is None:
            self.refused += 1
            return web.Response(status=403)
        self.receipts.append(receipt)
        return web.Response(text="ok")


@pytest.fixture
async def callback_port() -> AsyncIterator[tuple[int, dict[str, Any]]]:
    port = free_port()
    holder: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.Response:
        callbacks: Callbacks = holder["callbacks"]
        return await callbacks.handle(request)

    app = web.Application()
    app.router.add_get("/api/v1/receipts/kannel/{provider}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, holder
    await runner.cleanup()


@pytest.fixture
async def client(
    kannel: Kannel, smsc: Smsc, callback_port: tuple[int, dict[str, Any]]
) -> AsyncIterator[tuple[KannelClient, Callbacks]]:
    port, holder = callback_port
    provider = KannelProvider(
        name="gateway",
        url=kannel.sendsms_url,
        username=USERNAME,
        password=SecretStr(PASSWORD),
        source_addr="MAILING",
        callback_base_url=f"http://127.0.0.1:{port}",
        callback_secret=SecretStr(CALLBACK_SECRET),
    )
    holder["callbacks"] = callbacks = Callbacks(provider)
    curl = CurlMulti(max_connections=4, keepalive_s=5)

    async def bound() -> bool:
        return smsc.bound(KANNEL_SYSTEM_ID) >= 1

    await wait_until(bound, timeout=30, message=f"Kannel bound to the simulator\n{kannel.logs()}")
    yield KannelClient(provider, curl), callbacks
    await curl.close()


async def test_short_text_through_kannel_with_its_receipt(
    client: tuple[KannelClient, Callbacks], smsc: Smsc
) -> None:
    kannel_client, callbacks = client
    end = datetime.now(UTC) + timedelta(minutes=10, seconds=30)
    result = await kannel_client.submit("1001", PHONE, "Hello through Kannel", valid_until=end)
    assert result.outcome == SubmitOutcome.ACCEPTED, result
    assert result.message_id == "1001"

    async def receipt() -> list[KannelReceipt]:
        return callbacks.receipts

    [got] = await wait_until(receipt, timeout=20, message="the dlr-url call")
    assert (got.message_id, got.dlr_type, got.delivered) == ("1001", DLR_DELIVERED, True)
    assert "stat:DELIVRD" in got.reply
    [received] = smsc.messages()
    assert (received["to"], received["text"]) == (PHONE, "Hello through Kannel")
    # validity: whole minutes, rounded down, so the SMSC gives up before the end time.
    validity = datetime.fromisoformat(received["validity"].replace("Z", "+00:00"))
    assert end - timedelta(seconds=50) <= validity <= end


async def test_long_cyrillic_text_goes_whole_in_ucs2_with_one_receipt(
    client: tuple[KannelClient, Callbacks], smsc: Smsc
) -> None:
    kannel_client, callbacks = client
    text = "Длинное сообщение через шлюз Kannel. " * 5  # 185 characters: 3 parts
    result = await kannel_client.submit("1002", PHONE, text)
    assert result.outcome == SubmitOutcome.ACCEPTED and result.parts == 3, result

    async def parts() -> list[dict[str, Any]]:
        got = smsc.messages()
        return got if len(got) == 3 else []

    received = await wait_until(parts, timeout=20, message="3 parts at the SMSC")
    assert "".join(p["text"] for p in received) == text  # not cut to one SMS
    assert {p["data_coding"] for p in received} == {8}
    assert [p["registered_delivery"] for p in received] == [1, 0, 0]  # Kannel's way

    async def receipt() -> list[KannelReceipt]:
        return callbacks.receipts

    [got] = await wait_until(receipt, timeout=20, message="the receipt")
    assert (got.message_id, got.delivered) == ("1002", True)


async def test_undelivered_receipt_and_forged_callbacks(
    client: tuple[KannelClient, Callbacks], smsc: Smsc
) -> None:
    kannel_client, callbacks = client
    smsc.faults(undeliverable_numbers=[PHONE])
    result = await kannel_client.submit("1003", PHONE, "to a dead phone")
    assert result.outcome == SubmitOutcome.ACCEPTED

    async def receipt() -> list[KannelReceipt]:
        return callbacks.receipts

    [got] = await wait_until(receipt, timeout=20, message="the receipt")
    assert (got.message_id, got.dlr_type, got.delivered) == ("1003", DLR_UNDELIVERED, False)
    # Someone else calling the endpoint: no signature, a wrong one, another message's.
    provider = kannel_client.provider
    good = callback_signature(CALLBACK_SECRET, provider.name, "1003")
    assert parse_callback(provider, {"id": "1003", "type": "1"}) is None
    assert parse_callback(provider, {"id": "1003", "sig": "0" * 32, "type": "1"}) is None
    assert parse_callback(provider, {"id": "1004", "sig": good, "type": "1"}) is None
    assert parse_callback(provider, {"id": "1003", "sig": good, "type": "x"}) is None


async def test_refusals(client: tuple[KannelClient, Callbacks], smsc: Smsc) -> None:
    kannel_client, _ = client
    wrong = KannelClient(
        KannelProvider(
            **{
                **{f: getattr(kannel_client.provider, f) for f in KannelProvider.__slots__},
                "password": SecretStr("wrong"),
            }
        ),
        kannel_client.curl,
    )
    refused = await wrong.submit("1005", PHONE, "who are you")
    assert refused.outcome == SubmitOutcome.UNAVAILABLE and refused.error, refused
    assert "wrong" not in (refused.error or "")
    late = await kannel_client.submit(
        "1006", PHONE, "too late", valid_until=datetime.now(UTC) + timedelta(seconds=30)
    )
    assert late.outcome == SubmitOutcome.EXPIRED
    assert smsc.messages() == []


def test_validity_minutes_round_down() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert validity_minutes(now + timedelta(minutes=5, seconds=59), now) == 5
    assert validity_minutes(now + timedelta(seconds=59), now) == 0
    assert validity_minutes(now - timedelta(minutes=1), now) == 0


def test_config_refuses_quotes(tmp_path: Path) -> None:
    from scripts.kannel import kannel_config

    account = KannelAccount("h", 1, "s", 'bad"password', "u", "p")
    with pytest.raises(ValueError, match="quotes"):
        kannel_config(account, KannelPorts(1, 2, 3), tmp_path)


async def test_kannel_restarted_with_receipts_pending_loses_none(
    smsc: Smsc,
    callback_port: tuple[int, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Its own Kannel (the session's stays up): stopped while receipts are pending, refused
    meanwhile (unavailable, nothing sent), started again from the same state directory; the
    receipts it was waiting for still reach the dlr-url."""
    port, holder = callback_port
    account = KannelAccount(
        "127.0.0.1", smsc.port, KANNEL2_SYSTEM_ID, KANNEL2_PASSWORD, USERNAME, PASSWORD
    )
    ports = KannelPorts(free_port(), free_port(), free_port())
    provider = KannelProvider(
        name="gateway",
        url=f"http://127.0.0.1:{ports.sendsms}/cgi-bin/sendsms",
        username=USERNAME,
        password=SecretStr(PASSWORD),
        source_addr="MAILING",
        callback_base_url=f"http://127.0.0.1:{port}",
        callback_secret=SecretStr(CALLBACK_SECRET),
    )
    holder["callbacks"] = callbacks = Callbacks(provider)
    curl = CurlMulti(max_connections=4, keepalive_s=5)
    client = KannelClient(provider, curl)
    state = tmp_path / "kannel-state"
    smsc.faults(no_receipts=True)
    try:
        with running_kannel(account, state, ports=ports):
            await wait_until(
                lambda: asyncio.sleep(0, smsc.bound(KANNEL2_SYSTEM_ID) >= 1),
                timeout=30,
                message="this Kannel bound too",
            )
            for number in ("2001", "2002"):
                result = await client.submit(number, PHONE, f"pending {number}")
                assert result.outcome == SubmitOutcome.ACCEPTED, result

            async def both_at_smsc() -> bool:
                return len(smsc.messages()) == 2

            await wait_until(both_at_smsc, timeout=20, message="both at the SMSC")
        down = await client.submit("2003", PHONE, "while Kannel is down")
        assert down.outcome == SubmitOutcome.UNAVAILABLE, down
        with running_kannel(account, state, ports=ports):
            smsc.faults(no_receipts=False)

            async def both_receipts() -> list[KannelReceipt]:
                return callbacks.receipts if len(callbacks.receipts) >= 2 else []

            got = await wait_until(both_receipts, timeout=30, message="receipts after restart")
            assert sorted(r.message_id for r in got) == ["2001", "2002"]
            assert all(r.delivered for r in got)
    finally:
        await curl.close()
