"""The pre-send check with a providers file: recipients split by their operator code's route,
each route's finish estimate at its provider's max_tps, codes with no route called out, and the
cost per currency from the providers' price_per_segment (issue 21 on issue 19's routes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.support.rows import insert_clients

PROVIDERS = """
providers:
  - name: aggregator
    kind: smpp
    host: 127.0.0.1
    system_id: mailing
    password: secret
    source_addr: MAILING
    max_tps: 1
    price_per_segment: 0.5
  - name: stub
    kind: fabrique
    url: http://127.0.0.1:9/v1
    price_per_segment: 0.02
    currency: usd
  - name: spare
    kind: fabrique
    url: http://127.0.0.1:9/v2
routes:
  - operators: ["900"]
    via: [aggregator, stub]
  - operators: ["901"]
    via: [stub]
  - operators: ["903"]
    via: [spare]
"""
# 71 Cyrillic letters: UCS-2, two segments.
TEXT = "Ж" * 71


@pytest.fixture(scope="module")
async def routed_app(
    api_settings: ApiSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    path = tmp_path_factory.mktemp("providers") / "providers.yaml"
    path.write_text(PROVIDERS)
    app = create_app(api_settings.model_copy(update={"providers_file": path}), events=NoEvents())
    async with LifespanManager(app) as manager:
        yield manager.app


@pytest.fixture
async def client(routed_app: Any, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    with database.connect(clean_db) as conn:
        seed(conn)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=routed_app),
        base_url="http://api.test/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as c:
        yield c


def seed(conn: psycopg.Connection[Any]) -> None:
    insert_clients(conn, 3, first=0, operator_code="900")
    insert_clients(conn, 2, first=10, operator_code="901")
    insert_clients(conn, 1, first=20, operator_code="902")  # no route: would wait
    insert_clients(conn, 1, first=30, operator_code="903")
    opted_out = insert_clients(conn, 1, first=40, operator_code="900")
    conn.execute("UPDATE client SET opted_out_at = now() WHERE id = ANY(%s)", [opted_out])


async def test_each_route_gets_its_codes_recipients_and_an_estimate_at_its_rate(
    client: httpx.AsyncClient,
) -> None:
    body = {
        "filter": {},
        "text": TEXT,
        "start_at": "2030-03-01T09:00:00+00:00",
        "end_at": "2030-03-01T09:00:02+00:00",  # 3 messages at 1/s do not fit in 2 s
    }
    answer = (await client.post("/mailings/check", json=body)).json()
    assert answer["recipients"]["final"] == 7
    routes = {r["provider"]: r for r in answer["routes"]}
    assert {name: r["recipients"] for name, r in routes.items()} == {
        "aggregator": 3,
        "stub": 2,
        "spare": 1,
        "(no route)": 1,
    }
    assert routes["aggregator"]["max_tps"] == 1
    assert routes["aggregator"]["can_finish"] is False  # a warning, not a refusal
    assert routes["aggregator"]["finishes_at"] is not None
    assert routes["stub"]["can_finish"] is True and routes["stub"]["max_tps"] is None
    assert routes["(no route)"]["can_finish"] is False
    assert answer["text"] == {"encoding": "UCS-2", "segments": 2, "total_segments": 14}
    # Per currency: the priced providers' recipients x segments x price ('spare' has none).
    assert answer["cost"] == [
        {"currency": "RUB", "amount": 3.0, "recipients": 3},
        {"currency": "USD", "amount": 0.08, "recipients": 2},
    ]


async def test_a_created_mailing_answers_the_same_check(client: httpx.AsyncClient) -> None:
    body = {
        "filter": {"operator_codes": ["901"]},
        "text": "Hello",
        "start_at": "2030-03-01T09:00:00+00:00",
        "end_at": "2030-03-01T10:00:00+00:00",
    }
    created = await client.post("/mailings", json=body)
    assert created.status_code == 201, created.text
    check = created.json()["check"]
    assert [(r["provider"], r["recipients"]) for r in check["routes"]] == [("stub", 2)]
    assert check["cost"] == [{"currency": "USD", "amount": 0.04, "recipients": 2}]
