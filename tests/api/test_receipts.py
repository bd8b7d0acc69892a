"""Issue 19 on the api: Kannel's receipts at the dlr-url (forged ones refused, good ones
stored), delivery statistics, GET /providers and the replies of a mailing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.app import create_app
from services.api.events import NoEvents
from services.api.providers import metrics as provider_metrics
from services.api.receipts import mo_signature, mo_url
from services.sender.kannel import callback_signature, dlr_url
from shared.provider_state import ProviderReport, report_provider_states
from shared.providers import KannelProvider, load_providers_file
from shared.replies import Reply, record_replies
from shared.settings import ApiSettings
from tests.api.helpers import assert_error, insert_clients, insert_mailing, insert_messages
from tests.api.helpers import unchanged as db_unchanged
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN

SECRET = "kannel-callback-secret"
PROVIDERS = f"""
providers:
  - name: gateway
    kind: kannel
    url: http://127.0.0.1:13013/cgi-bin/sendsms
    username: mailing
    password: kannel-password-value
    callback_secret: {SECRET}
    source_addr: MAILING
    callback_base_url: http://api.test
  - name: aggregator
    kind: smpp
    host: 127.0.0.1
    system_id: mailing
    password: smpppass
    source_addr: MAILING
    binds: 2
    max_tps: 100
  - name: stub
    kind: fabrique
    url: http://127.0.0.1:8090/v1
    token: stub-token-value
routes:
  - operators: ["900"]
    via: [aggregator, stub]
  - operators: ["*"]
    via: [gateway]
"""
SECRET_VALUES = (SECRET, "kannel-password-value", "smpppass", "stub-token-value")


@pytest.fixture(scope="module")
def providers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("providers") / "providers.yaml"
    path.write_text(PROVIDERS)
    return path


@pytest.fixture(scope="module")
async def provider_app(api_settings: ApiSettings, providers_file: Path) -> AsyncIterator[Any]:
    settings = api_settings.model_copy(update={"providers_file": providers_file})
    app = create_app(settings, events=NoEvents())
    async with LifespanManager(app) as manager:
        yield manager.app


@pytest.fixture
async def client(provider_app: Any, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=provider_app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://api.test/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as c:
        yield c


@pytest.fixture
def gateway(providers_file: Path) -> KannelProvider:
    config, _ = load_providers_file(providers_file)
    provider = config.providers["gateway"]
    assert isinstance(provider, KannelProvider)
    return provider


def sent_through(
    db: psycopg.Connection, mailing_id: int, clients: list[int], provider: str
) -> list[int]:
    """Messages the provider accepted: `sent` with its message id (Kannel's is ours)."""
    ids = insert_messages(db, mailing_id, clients)
    db.execute(
        "UPDATE message SET status = 'sent', sent_at = now(), provider = %s,"
        " provider_message_id = id::text WHERE id = ANY(%s)",
        (provider, ids),
    )
    return ids


def statuses(db: psycopg.Connection, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    rows = db.execute(
        "SELECT id, status, last_error FROM message WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def callback(provider: KannelProvider, message_id: int, dlr_type: int, reply: str = "") -> str:
    """The dlr-url as Kannel calls it: its %d and %A filled in."""
    url = dlr_url(provider, str(message_id))
    url = url.replace("type=%d", f"type={dlr_type}").replace("reply=%A", "reply=" + reply)
    return url.removeprefix("http://api.test/api/v1")


# --- the Kannel endpoint ---------------------------------------------------------------------


async def test_good_receipts_are_stored(
    client: httpx.AsyncClient, db: psycopg.Connection, gateway: KannelProvider
) -> None:
    mailing = insert_mailing(db, status="running")
    ids = sent_through(db, mailing, insert_clients(db, 3, operator_code="905"), "gateway")
    anon = {"Authorization": ""}  # the gateway has no token: the signature is its proof
    delivered = await client.get(callback(gateway, ids[0], 1, "stat:DELIVRD"), headers=anon)
    assert delivered.status_code == 200, delivered.text
    assert delivered.json() == {"result": "applied"}
    undelivered = await client.get(
        callback(gateway, ids[1], 2, "id:abc stat:UNDELIV err:011"), headers=anon
    )
    assert undelivered.json() == {"result": "applied"}
    refused = await client.get(callback(gateway, ids[2], 16), headers=anon)
    assert refused.json() == {"result": "applied"}
    assert statuses(db, ids) == {
        ids[0]: ("delivered", None),
        ids[1]: ("undelivered", "UNDELIV err:011"),
        ids[2]: ("undelivered", "refused by the SMSC"),
    }
    # Twice: the message had its receipt; nothing changes.
    again = await client.get(callback(gateway, ids[0], 2), headers=anon)
    assert again.status_code == 200
    assert statuses(db, ids)[ids[0]] == ("delivered", None)


async def test_intermediate_receipts_change_nothing(
    client: httpx.AsyncClient, db: psycopg.Connection, gateway: KannelProvider
) -> None:
    mailing = insert_mailing(db, status="running")
    ids = sent_through(db, mailing, insert_clients(db, 1), "gateway")
    for dlr_type in (4, 8):
        response = await client.get(callback(gateway, ids[0], dlr_type))
        assert response.json() == {"result": "intermediate"}
    assert statuses(db, ids) == {ids[0]: ("sent", None)}


async def test_concurrent_receipts_are_written_in_groups(
    client: httpx.AsyncClient, db: psycopg.Connection, gateway: KannelProvider
) -> None:
    mailing = insert_mailing(db, status="running")
    ids = sent_through(db, mailing, insert_clients(db, 60), "gateway")
    answers = await asyncio.gather(
        *(client.get(callback(gateway, i, 1 if n % 3 else 2)) for n, i in enumerate(ids))
    )
    assert {a.status_code for a in answers} == {200}
    got = statuses(db, ids)
    assert sum(1 for s, _ in got.values() if s == "delivered") == 40
    assert sum(1 for s, _ in got.values() if s == "undelivered") == 20


async def test_forged_receipts_are_refused(
    client: httpx.AsyncClient, db: psycopg.Connection, gateway: KannelProvider
) -> None:
    mailing = insert_mailing(db, status="running")
    ids = sent_through(db, mailing, insert_clients(db, 2), "gateway")
    good = callback_signature(SECRET, "gateway", str(ids[0]))
    other = callback_signature("not-the-secret", "gateway", str(ids[0]))
    forged = [
        f"/receipts/kannel/gateway?id={ids[0]}&type=1",  # no signature
        f"/receipts/kannel/gateway?id={ids[0]}&sig={other}&type=1",  # another secret
        f"/receipts/kannel/gateway?id={ids[1]}&sig={good}&type=1",  # another message's
        f"/receipts/kannel/gateway?sig={good}&type=1",  # no id
    ]
    with db_unchanged(db):
        for url in forged:
            assert_error(await client.get(url), 403, "signature")
        assert_error(await client.post(forged[1]), 403, "signature")
        # Genuine but malformed: 400; an unknown or non-Kannel provider: 404.
        assert_error(
            await client.get(f"/receipts/kannel/gateway?id={ids[0]}&sig={good}&type=x"),
            400,
            "type",
        )
        signed_for_stub = callback_signature(SECRET, "aggregator", str(ids[0]))
        for name in ("aggregator", "nobody"):
            url = f"/receipts/kannel/{name}?id={ids[0]}&sig={signed_for_stub}&type=1"
            assert_error(await client.get(url), 404, "not found")
    assert statuses(db, ids) == {ids[0]: ("sent", None), ids[1]: ("sent", None)}


# --- statistics ------------------------------------------------------------------------------


async def test_stats_count_receipts_per_provider_and_operator(
    client: httpx.AsyncClient, db: psycopg.Connection, gateway: KannelProvider
) -> None:
    mailing = insert_mailing(db, status="running")
    via_gateway = sent_through(db, mailing, insert_clients(db, 4, operator_code="905"), "gateway")
    via_smpp = sent_through(
        db, mailing, insert_clients(db, 2, first=100, operator_code="900"), "aggregator"
    )
    for message_id, kind in zip(via_gateway[:3], (1, 1, 2), strict=True):
        assert (await client.get(callback(gateway, message_id, kind))).status_code == 200
    db.execute("UPDATE message SET status = 'delivered' WHERE id = %s", (via_smpp[0],))

    stats = (await client.get(f"/mailings/{mailing}/stats")).json()
    assert stats["counts"]["delivered"] == 3
    assert stats["counts"]["undelivered"] == 1
    assert stats["counts"]["sent"] == 2
    assert stats["delivery"] == {
        "awaiting_receipt": 2,
        "delivered": 3,
        "undelivered": 1,
        "delivery_rate": 0.75,
        "by_route": [
            {
                "provider": "aggregator",
                "operator_code": "900",
                "awaiting_receipt": 1,
                "delivered": 1,
                "undelivered": 0,
                "delivery_rate": 1.0,
            },
            {
                "provider": "gateway",
                "operator_code": "905",
                "awaiting_receipt": 1,
                "delivered": 2,
                "undelivered": 1,
                "delivery_rate": 0.6667,
            },
        ],
    }
    page = (await client.get("/mailings/stats")).json()
    assert page["totals"]["delivered"] == 3
    assert page["items"][0]["counts"]["undelivered"] == 1


# --- providers -------------------------------------------------------------------------------


async def test_providers_show_state_rate_and_last_hour(
    client: httpx.AsyncClient,
    db: psycopg.Connection,
    gateway: KannelProvider,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        reports = [
            ProviderReport("aggregator", "smpp", True, binds_up=2, binds=2, rate=40.0),
            ProviderReport("gateway", "kannel", True, rate=3.5),
        ]
        await report_provider_states(session, "sender-a:1", reports)
        reports = [
            ProviderReport("aggregator", "smpp", False, binds_up=0, binds=2, reason="bind refused"),
            ProviderReport("gateway", "kannel", True, breaker_state="half_open", rate=1.5),
        ]
        await report_provider_states(session, "sender-b:2", reports)
    mailing = insert_mailing(db, status="running")
    ids = sent_through(db, mailing, insert_clients(db, 3, operator_code="905"), "gateway")
    assert (await client.get(callback(gateway, ids[0], 1))).status_code == 200
    assert (await client.get(callback(gateway, ids[1], 2))).status_code == 200

    response = await client.get("/providers", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
    assert response.status_code == 200, response.text
    body = {p["name"]: p for p in response.json()}
    assert list(body) == ["aggregator", "gateway", "stub"]
    aggregator = body["aggregator"]
    assert aggregator["kind"] == "smpp"
    assert aggregator["max_tps"] == 100
    assert aggregator["state"] == "degraded"
    assert (aggregator["binds_up"], aggregator["binds"], aggregator["senders"]) == (2, 4, 2)
    assert aggregator["rate"] == 40.0
    assert aggregator["reason"] == "bind refused"
    gateway_out = body["gateway"]
    assert gateway_out["state"] == "up"
    assert gateway_out["breaker"] == "half_open"
    assert gateway_out["rate"] == 5.0
    assert gateway_out["last_hour"] == {
        "awaiting_receipt": 1,
        "delivered": 1,
        "undelivered": 1,
        "delivery_rate": 0.5,
    }
    assert gateway_out["by_operator"] == [
        {
            "operator_code": "905",
            "awaiting_receipt": 1,
            "delivered": 1,
            "undelivered": 1,
            "delivery_rate": 0.5,
        }
    ]
    assert body["stub"]["state"] == "unknown"
    for secret in SECRET_VALUES:
        assert secret not in response.text
    assert "127.0.0.1" not in response.text  # no host or URL either


async def test_providers_need_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/providers", headers={"Authorization": ""}), 401)


# --- replies ---------------------------------------------------------------------------------


async def test_replies_are_listed_per_mailing_with_keyset_pages(
    client: httpx.AsyncClient, db: psycopg.Connection, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mailing = insert_mailing(db, status="running")
    other = insert_mailing(db, status="running")
    clients = insert_clients(db, 3)
    sent_through(db, mailing, clients[:2], "gateway")
    sent_through(db, other, clients[2:], "gateway")
    phones = [r[0] for r in db.execute("SELECT phone FROM client ORDER BY id").fetchall()]
    async with sessions() as session:
        await record_replies(
            session,
            [
                Reply("aggregator", phones[0], "thanks"),
                Reply("aggregator", phones[1], "STOP"),
                Reply("aggregator", phones[2], "other mailing"),
            ],
            ["STOP"],
        )
    first = await client.get(f"/mailings/{mailing}/replies", params={"limit": 1})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [r["text"] for r in page["items"]] == ["thanks"]
    assert page["items"][0]["client_id"] == clients[0]
    assert page["items"][0]["stop"] is False
    second = await client.get(
        f"/mailings/{mailing}/replies", params={"limit": 1, "after_id": page["next_after_id"]}
    )
    assert [(r["text"], r["stop"]) for r in second.json()["items"]] == [("STOP", True)]
    assert_error(await client.get("/mailings/999999/replies"), 404, "not found")


async def test_delivery_gauges_follow_the_receipts(
    client: httpx.AsyncClient,
    db: psycopg.Connection,
    gateway: KannelProvider,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    mailing = insert_mailing(db, status="running")
    ids = sent_through(db, mailing, insert_clients(db, 4), "gateway")
    for message_id, kind in zip(ids, (1, 1, 1, 2), strict=True):
        assert (await client.get(callback(gateway, message_id, kind))).status_code == 200
    async with sessions() as session:
        await provider_metrics.refresh(session, ["gateway", "stub"])

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert value("mailing_provider_delivery_ratio", provider="gateway") == 0.75
    assert value("mailing_provider_receipts_recent", provider="gateway", outcome="delivered") == 3
    assert value("mailing_provider_receipts_recent", provider="stub", outcome="delivered") == 0
    assert value("mailing_provider_delivery_ratio", provider="stub") is None  # no receipts


async def test_without_a_providers_file_default_shows_the_senders_breaker(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """The session's app has no PROVIDERS_FILE: `default`, whose state is the breaker the
    senders report in provider_status."""
    assert [p["state"] for p in (await api.get("/providers")).json()] == ["unknown"]
    db.execute(
        "INSERT INTO provider_status (instance, breaker_state, reason)"
        " VALUES ('sender-a:1', 'open', 'provider failing'), ('sender-b:2', 'closed', '')"
    )
    (default,) = (await api.get("/providers")).json()
    assert (default["name"], default["kind"], default["max_tps"]) == ("default", "fabrique", None)
    assert (default["state"], default["breaker"], default["senders"]) == ("degraded", "open", 2)
    assert default["reason"] == "provider failing"


async def test_replies_through_kannel_are_stored_and_a_stop_word_opts_out(
    client: httpx.AsyncClient, db: psycopg.Connection, gateway: KannelProvider
) -> None:
    mailing = insert_mailing(db, status="running")
    clients = insert_clients(db, 2, operator_code="905")
    sent_through(db, mailing, clients, "gateway")
    phones = [r[0] for r in db.execute("SELECT phone FROM client ORDER BY id").fetchall()]
    url = mo_url(gateway).removeprefix("http://api.test/api/v1")
    good = url.replace("from=%p", f"from=%2B{phones[0]}").replace("text=%a", "text=stop")
    answer = await client.get(good, headers={"Authorization": ""})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"result": "stored"}
    opted = db.execute("SELECT opted_out_at FROM client WHERE id = %s", (clients[0],)).fetchone()
    assert opted is not None and opted[0] is not None
    replies = (await client.get(f"/mailings/{mailing}/replies")).json()["items"]
    assert [(r["client_id"], r["text"], r["stop"]) for r in replies] == [(clients[0], "stop", True)]

    forged = good.replace(f"sig={mo_signature(gateway)}", "sig=" + "0" * 32)
    other_message = good.replace(
        f"sig={mo_signature(gateway)}", "sig=" + callback_signature(SECRET, "gateway", "1")
    )
    with db_unchanged(db):
        assert_error(await client.get(forged), 403, "signature")
        assert_error(await client.get(other_message), 403, "signature")
        empty = url.replace("from=%p", f"from={phones[1]}").replace("text=%a", "text=")
        assert_error(await client.get(empty), 400, "text")
    assert db.execute("SELECT count(*) FROM message_reply").fetchone() == (1,)
