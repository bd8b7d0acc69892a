"""End to end for GET /api/v1/providers and a mailing's delivery figures: a real sender
routes code 900 to the SMSC simulator and the rest to the stub; the api (with the same
providers file) shows what the sender reports and what the receipts said."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_providers import providers_file, smsc, smsc_process
from tests.support import database
from tests.support.smsc import Smsc
from tests.support.waiting import wait_until

__all__ = ["smsc", "smsc_process"]

pytestmark = pytest.mark.pipeline


@pytest.fixture
async def providers_api(
    pipeline: Pipeline, tmp_path: Path, smsc: Smsc
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    path = providers_file(tmp_path / "providers.yaml", smsc, pipeline.stub.url)
    settings = ApiSettings(
        database_url=database.sqlalchemy_url(pipeline.db_name),
        api_tokens=[ADMIN_TOKEN],
        db_pool_size=2,
        providers_file=path,
    )
    app = create_app(settings, events=NoEvents())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://api.test/api/v1",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client:
            yield client, path


async def test_providers_api_shows_the_senders_state_and_the_receipts(
    pipeline: Pipeline, smsc: Smsc, providers_api: tuple[httpx.AsyncClient, Path]
) -> None:
    client, path = providers_api
    pipeline.seed_clients(60, operator_code="900")
    pipeline.seed_clients(20, first=1001, operator_code="901")
    smsc.faults(undeliverable_numbers=[f"79{n:09d}" for n in range(1, 7)])
    await pipeline.start(providers_file=path)
    mailing = await pipeline.create_mailing(text="Sale today")

    async def settled() -> dict[str, Any] | None:
        stats = (await client.get(f"/mailings/{mailing['id']}/stats")).json()
        d = stats["delivery"]
        return stats if d["delivered"] + d["undelivered"] == 60 else None

    stats = await wait_until(settled, timeout=60, message="60 receipts in")
    assert stats["delivery"]["delivered"] == 54
    assert stats["delivery"]["undelivered"] == 6
    assert stats["delivery"]["delivery_rate"] == 0.9
    routes = {(g["provider"], g["operator_code"]): g for g in stats["delivery"]["by_route"]}
    assert routes[("aggregator", "900")]["delivered"] == 54
    assert routes[("stub", "901")]["awaiting_receipt"] == 20  # the task's API sends none

    async def reported() -> dict[str, Any] | None:
        body = {p["name"]: p for p in (await client.get("/providers")).json()}
        aggregator = body["aggregator"]
        up = aggregator["state"] == "up" and aggregator["binds_up"] == 1
        return body if up and body["stub"]["state"] == "up" else None

    body = await wait_until(reported, timeout=30, message="the sender's provider report")
    aggregator = body["aggregator"]
    assert (aggregator["kind"], aggregator["max_tps"], aggregator["binds"]) == ("smpp", 40, 1)
    assert aggregator["last_hour"]["delivered"] == 54
    assert aggregator["last_hour"]["undelivered"] == 6
    assert [o["operator_code"] for o in aggregator["by_operator"]] == ["900"]
    assert body["stub"]["last_hour"]["awaiting_receipt"] == 20
