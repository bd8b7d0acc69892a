"""The sender with a providers file: each message goes where its operator code routes it.

Real peers: the SMSC simulator (scripts/smsc-sim, SMPP) and the provider stub (the task's API).
Operator 900 routes to the simulator (`aggregator`) with the stub after it; every other code
to the stub. Receipts move the simulator's messages to delivered / undelivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from scripts.kannel import Kannel, KannelAccount, running_kannel
from services.sender.kannel import parse_callback
from shared.db import create_engine, create_session_factory
from shared.providers import KannelProvider
from shared.receipts import Receipt, apply_receipts
from shared.settings import BaseServiceSettings
from tests.pipeline.conftest import Pipeline
from tests.support import database
from tests.support.rig.processes import free_port
from tests.support.smsc import (
    KANNEL_PASSWORD,
    KANNEL_SYSTEM_ID,
    PASSWORD,
    SECOND_PASSWORD,
    SECOND_SYSTEM_ID,
    SYSTEM_ID,
    Smsc,
    running_smsc,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

MAX_TPS = 40
KANNEL_USERNAME, KANNEL_WEB_PASSWORD, CALLBACK_SECRET = "mailing", "kannel-secret", "cb-secret"


@pytest.fixture(scope="module")
def smsc_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smsc]:
    with running_smsc(tmp_path_factory.mktemp("smsc")) as smsc:
        yield smsc


@pytest.fixture
def smsc(smsc_process: Smsc) -> Iterator[Smsc]:
    smsc_process.reset()
    yield smsc_process
    smsc_process.reset()


def providers_file(path: Path, smsc: Smsc, stub_url: str) -> Path:
    path.write_text(
        f"""
providers:
  - name: stub
    kind: fabrique
    url: {stub_url}
    token: stub-token
  - name: aggregator
    kind: smpp
    host: 127.0.0.1
    port: {smsc.port}
    system_id: {SYSTEM_ID}
    password: {PASSWORD}
    source_addr: MAILING
    max_tps: {MAX_TPS}
routes:
  - operators: ["900"]
    via: [aggregator, stub]
  - operators: ["*"]
    via: [stub]
"""
    )
    return path


def by_provider(pipeline: Pipeline, mailing_id: int) -> dict[tuple[str | None, str], int]:
    with pipeline.db() as conn:
        rows = conn.execute(
            "SELECT m.provider, m.status, count(*) FROM message m"
            " WHERE m.mailing_id = %s GROUP BY 1, 2",
            [mailing_id],
        ).fetchall()
    return {(provider, status): n for provider, status, n in rows}


def counters_agree(pipeline: Pipeline, mailing_id: int) -> dict[str, int]:
    """The status counters (the message_count view) agree with the messages."""
    with pipeline.db() as conn:
        view = dict(
            conn.execute(
                "SELECT status, count FROM message_count WHERE mailing_id = %s AND count <> 0",
                [mailing_id],
            ).fetchall()
        )
    truth = pipeline.message_counts(mailing_id)
    assert view == truth
    return truth


async def test_messages_go_where_their_code_routes_and_receipts_settle_them(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(200, operator_code="900")
    pipeline.seed_clients(50, first=1001, operator_code="901")
    undeliverable = [f"79{n:09d}" for n in range(1, 11)]
    smsc.faults(undeliverable_numbers=undeliverable)
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    await pipeline.start(providers_file=path)

    mailing = await pipeline.create_mailing(text="Sale today")

    async def settled() -> dict[str, int] | None:
        c = pipeline.message_counts(mailing["id"])
        receipts = c.get("delivered", 0) + c.get("undelivered", 0)
        return c if receipts == 200 and c.get("sent", 0) == 50 else None

    counts: dict[str, Any] = await wait_until(
        settled, timeout=60, message="200 receipts in and 50 sent to the stub"
    )
    assert counts == {"delivered": 190, "undelivered": 10, "sent": 50}
    with pipeline.db() as conn:
        errors = conn.execute(
            "SELECT DISTINCT split_part(last_error, ' ', 1) FROM message"
            " WHERE mailing_id = %s AND status = 'undelivered'",
            [mailing["id"]],
        ).fetchall()
    assert errors == [("UNDELIV",)]  # the receipt's state, in last_error
    assert by_provider(pipeline, mailing["id"]) == {
        ("aggregator", "delivered"): 190,
        ("aggregator", "undelivered"): 10,
        ("stub", "sent"): 50,
    }
    # The stub got exactly the other code's messages; the SMSC the 900's, each once.
    stub_phones = {int(d["phone"]) for d in pipeline.deliveries().values()}
    assert stub_phones == {int(f"79{n:09d}") for n in range(1001, 1051)}
    assert len(pipeline.deliveries()) == 50
    phones = sorted(m["to"] for m in smsc.messages())
    assert phones == [f"79{n:09d}" for n in range(1, 201)]
    # Validity: the mailing's end time reached the SMSC.
    assert all(m["validity"] for m in smsc.messages())
    # max_tps held at the SMSC: no second over max_tps + 10 %.
    assert smsc.stats()["max_per_second"] <= MAX_TPS * 1.1
    await pipeline.wait_completed(mailing["id"])
    counters_agree(pipeline, mailing["id"])


async def test_failover_to_the_next_provider_while_the_smsc_refuses_binds(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(60, operator_code="900")
    smsc.faults(refuse_binds=True)
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    await pipeline.start(providers_file=path)

    first = await pipeline.create_mailing(text="one")
    counts = await pipeline.wait_terminal(first["id"], 60, timeout=60)
    assert counts == {"sent": 60}
    assert by_provider(pipeline, first["id"]) == {("stub", "sent"): 60}
    assert smsc.stats()["submits"] == 0

    # The SMSC takes binds again: the next mailing goes to it.
    smsc.faults(refuse_binds=False)

    async def bound() -> bool:
        return smsc.bound() > 0

    await wait_until(bound, timeout=30, message="the sender binds again")
    second = await pipeline.create_mailing(text="two")

    async def delivered() -> bool:
        return pipeline.message_counts(second["id"]).get("delivered") == 60

    await wait_until(delivered, timeout=60, message="60 delivered through the SMSC")
    assert by_provider(pipeline, second["id"]) == {("aggregator", "delivered"): 60}
    counters_agree(pipeline, second["id"])


async def test_binds_dropped_mid_mailing_the_rest_goes_to_the_stub(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(200, operator_code="900")
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    await pipeline.start(providers_file=path)

    async def bound() -> bool:
        return smsc.bound() > 0

    await wait_until(bound, timeout=30, message="the sender bound")
    mailing = await pipeline.create_mailing(text="Sale today")

    async def some_submitted() -> bool:
        return int(smsc.stats()["submits"]) >= 40

    await wait_until(some_submitted, timeout=30, message="40 messages at the SMSC")
    smsc.faults(refuse_binds=True)
    assert smsc.drop_binds() >= 1
    counts = await pipeline.wait_terminal(mailing["id"], 200, timeout=60)
    assert set(counts) <= {"delivered", "sent"}, counts
    providers = by_provider(pipeline, mailing["id"])
    at_smsc = {m["to"] for m in smsc.messages()}
    at_stub = {str(d["phone"]) for d in pipeline.deliveries().values()}
    assert providers[("stub", "sent")] > 0
    # Nothing lost: every phone reached one of them; a phone at both is one of the requests
    # in flight when the binds dropped (no answer: retried), within the window.
    assert at_smsc | at_stub == {f"79{n:09d}" for n in range(1, 201)}
    assert len(at_smsc & at_stub) <= 32
    # The SMSC keeps the receipts of what it took until a bind is back: none is lost.
    smsc.faults(refuse_binds=False)
    took = sum(n for (p, _), n in providers.items() if p == "aggregator")

    async def receipts_in() -> bool:
        now = by_provider(pipeline, mailing["id"])
        return now.get(("aggregator", "delivered"), 0) == took

    await wait_until(receipts_in, timeout=30, message="every receipt in after the rebind")
    counters_agree(pipeline, mailing["id"])


async def test_early_and_duplicate_receipts_count_once_and_a_stop_reply_opts_out(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(50, operator_code="900")
    smsc.faults(receipt_before_response=True, duplicate_receipts=True)
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    await pipeline.start(providers_file=path)

    mailing = await pipeline.create_mailing(text="Sale today")

    async def delivered() -> bool:
        return pipeline.message_counts(mailing["id"]).get("delivered") == 50

    await wait_until(delivered, timeout=60, message="50 delivered")
    counters_agree(pipeline, mailing["id"])

    # A reply that is exactly a stop word opts the client out; another text is only kept.
    smsc.mo("79000000001", " stop ")
    smsc.mo("79000000002", "when does it end?")

    async def replies() -> list[tuple[Any, ...]] | None:
        with pipeline.db() as conn:
            rows = conn.execute(
                "SELECT phone, client_id, mailing_id, stop FROM message_reply ORDER BY phone"
            ).fetchall()
        return rows if len(rows) == 2 else None

    rows = await wait_until(replies, timeout=30, message="two replies stored")
    assert rows == [
        ("79000000001", 1, mailing["id"], True),
        ("79000000002", 2, mailing["id"], False),
    ]
    with pipeline.db() as conn:
        opted = conn.execute(
            "SELECT id FROM client WHERE opted_out_at IS NOT NULL ORDER BY id"
        ).fetchall()
        audit = conn.execute(
            "SELECT actor_name, target_id FROM audit_log WHERE target_type = 'client'"
        ).fetchall()
    assert opted == [(1,)]
    assert audit == [("sms:aggregator", "1")]


async def test_max_tps_is_shared_by_two_senders(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(240, operator_code="900")
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    senders = (await pipeline.start(senders=2, providers_file=path))[1:]

    async def halved() -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            for sender in senders:
                text = (await client.get(f"{sender.metrics_url}/metrics")).text
                if (
                    f'mailing_provider_rate_share{{provider="aggregator"}} {MAX_TPS / 2}'
                    not in text
                ):
                    return False
        return True

    await wait_until(halved, timeout=30, message="each sender at half of max_tps")
    mailing = await pipeline.create_mailing(text="Sale today")

    async def delivered() -> bool:
        return pipeline.message_counts(mailing["id"]).get("delivered") == 240

    await wait_until(delivered, timeout=90, message="240 delivered")
    stats = smsc.stats()
    assert stats["max_per_second"] <= MAX_TPS * 1.1, stats["per_second"]
    # The capacity is used: the busiest seconds come close to max_tps.
    assert stats["max_per_second"] >= MAX_TPS * 0.8, stats["per_second"]


async def test_best_route_sends_most_to_the_provider_that_delivers(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(400, operator_code="900")
    smsc.faults(
        receipt_delay_ms=20,
        undelivered_ratio_by_account={SYSTEM_ID: 0.02, SECOND_SYSTEM_ID: 0.8},
    )
    path = tmp_path / "providers.yaml"
    path.write_text(
        f"""
providers:
  - name: good
    kind: smpp
    host: 127.0.0.1
    port: {smsc.port}
    system_id: {SYSTEM_ID}
    password: {PASSWORD}
    source_addr: MAILING
    max_tps: 100
  - name: poor
    kind: smpp
    host: 127.0.0.1
    port: {smsc.port}
    system_id: {SECOND_SYSTEM_ID}
    password: {SECOND_PASSWORD}
    source_addr: MAILING
    max_tps: 100
routes:
  - operators: ["*"]
    via: best [poor, good]   # written worse first: the receipts must reorder them
"""
    )
    await pipeline.start(providers_file=path)

    async def bound() -> bool:
        return smsc.bound(SYSTEM_ID) > 0 and smsc.bound(SECOND_SYSTEM_ID) > 0

    await wait_until(bound, timeout=30, message="both accounts bound")
    mailing = await pipeline.create_mailing(text="Sale today")
    counts = await pipeline.wait_terminal(mailing["id"], 400, timeout=90)
    assert set(counts) <= {"delivered", "undelivered", "sent"}
    by = by_provider(pipeline, mailing["id"])
    good = sum(n for (p, _), n in by.items() if p == "good")
    poor = sum(n for (p, _), n in by.items() if p == "poor")
    assert good + poor == 400
    assert good > poor, by
    assert poor > 0, "the other provider keeps a scouting share"
    # Once receipts are in, the traffic follows them: of the last half sent, nearly all went
    # to the provider that delivers (the rest: the 5 % scouting share).
    with pipeline.db() as conn:
        last = conn.execute(
            "SELECT provider FROM message WHERE mailing_id = %s ORDER BY sent_at DESC LIMIT 200",
            [mailing["id"]],
        ).fetchall()
    assert sum(p == "good" for (p,) in last) >= 0.85 * 200, by


@pytest.fixture(scope="module")
def kannel(smsc_process: Smsc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kannel]:
    account = KannelAccount(
        "127.0.0.1",
        smsc_process.port,
        KANNEL_SYSTEM_ID,
        KANNEL_PASSWORD,
        KANNEL_USERNAME,
        KANNEL_WEB_PASSWORD,
    )
    with running_kannel(account, tmp_path_factory.mktemp("kannel")) as rig:
        yield rig


async def test_kannel_route_sends_through_the_gateway_and_its_receipts_settle(
    pipeline: Pipeline, smsc: Smsc, kannel: Kannel, tmp_path: Path
) -> None:
    """Operator 905 through Kannel (in front of the simulator). Kannel's receipts come to a
    stand-in of the api's receipt endpoint here, which checks them (`parse_callback`) and
    stores them with `shared.receipts.apply_receipts`, as the endpoint does."""
    pipeline.seed_clients(30, operator_code="905")
    port = free_port()
    provider = KannelProvider(
        name="gateway",
        url=kannel.sendsms_url,
        username=KANNEL_USERNAME,
        password=SecretStr(KANNEL_WEB_PASSWORD),
        source_addr="MAILING",
        callback_base_url=f"http://127.0.0.1:{port}",
        callback_secret=SecretStr(CALLBACK_SECRET),
    )
    engine = create_engine(
        BaseServiceSettings(database_url=database.sqlalchemy_url(pipeline.db_name), db_pool_size=2)
    )
    sessions = create_session_factory(engine)

    async def receipt(request: web.Request) -> web.Response:
        found = parse_callback(provider, dict(request.query))
        if found is None or request.match_info["provider"] != provider.name:
            return web.Response(status=403)
        if found.final:
            async with sessions() as session:
                await apply_receipts(
                    session, [Receipt(found.provider, found.message_id, found.delivered)]
                )
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/api/v1/receipts/kannel/{provider}", receipt)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        path = tmp_path / "providers.yaml"
        path.write_text(
            f"""
providers:
  - name: stub
    kind: fabrique
    url: {pipeline.stub.url}
    token: stub-token
  - name: gateway
    kind: kannel
    url: {kannel.sendsms_url}
    username: {KANNEL_USERNAME}
    password: {KANNEL_WEB_PASSWORD}
    callback_secret: {CALLBACK_SECRET}
    source_addr: MAILING
    callback_base_url: http://127.0.0.1:{port}
routes:
  - operators: ["905"]
    via: [gateway, stub]
  - operators: ["*"]
    via: [stub]
"""
        )

        async def bound() -> bool:
            return smsc.bound(KANNEL_SYSTEM_ID) >= 1

        await wait_until(bound, timeout=30, message="Kannel bound to the simulator")
        await pipeline.start(providers_file=path)
        mailing = await pipeline.create_mailing(text="Привет из шлюза")

        async def delivered() -> bool:
            return pipeline.message_counts(mailing["id"]).get("delivered") == 30

        await wait_until(delivered, timeout=60, message="30 delivered through Kannel")
        with pipeline.db() as conn:
            rows = conn.execute(
                "SELECT id, provider, provider_message_id FROM message WHERE mailing_id = %s",
                [mailing["id"]],
            ).fetchall()
        # Kannel's receipts come back by our id: it is the provider's id for the message.
        assert {(p, pid == str(i)) for i, p, pid in rows} == {("gateway", True)}
        assert not pipeline.deliveries()
        assert {m["to"] for m in smsc.messages()} == {f"79{n:09d}" for n in range(1, 31)}
        counters_agree(pipeline, mailing["id"])
    finally:
        await runner.cleanup()
        await engine.dispose()


async def test_sigterm_drains_the_window_then_unbinds(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(300, operator_code="900")
    smsc.faults(response_delay_ms=400)  # submits stay outstanding a while
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    (sender,) = (await pipeline.start(providers_file=path))[1:]
    mailing = await pipeline.create_mailing(text="Sale today")

    async def outstanding() -> bool:
        return int(smsc.stats()["submits"]) >= 20

    await wait_until(outstanding, timeout=30, message="submits under way")
    sender.terminate()
    assert sender.wait_stopped(timeout=30) == 0
    stats = smsc.stats()
    assert stats["unbinds"] >= 1, stats
    # Every submit the SMSC took was answered before the unbind and its result written: the
    # messages it holds are all recorded as sent by the aggregator (none left unknown).
    with pipeline.db() as conn:
        recorded = {
            phone
            for (phone,) in conn.execute(
                "SELECT c.phone FROM message m JOIN client c ON c.id = m.client_id"
                " WHERE m.mailing_id = %s AND m.provider = 'aggregator'",
                [mailing["id"]],
            ).fetchall()
        }
    assert {m["to"] for m in smsc.messages()} == recorded


async def test_throttling_retries_soon_and_spends_no_attempt(
    pipeline: Pipeline, smsc: Smsc, tmp_path: Path
) -> None:
    pipeline.seed_clients(50, operator_code="900")
    smsc.faults(throttle_next=20)
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    await pipeline.start(providers_file=path)
    mailing = await pipeline.create_mailing(text="Sale today")

    async def delivered() -> bool:
        return pipeline.message_counts(mailing["id"]).get("delivered") == 50

    await wait_until(delivered, timeout=60, message="50 delivered despite throttling")
    assert smsc.stats()["throttled"] == 20
    assert by_provider(pipeline, mailing["id"]) == {("aggregator", "delivered"): 50}
    with pipeline.db() as conn:
        attempts = conn.execute(
            "SELECT DISTINCT attempts FROM message WHERE mailing_id = %s", [mailing["id"]]
        ).fetchall()
    assert attempts == [(1,)]  # the accepted request only
    counters_agree(pipeline, mailing["id"])
