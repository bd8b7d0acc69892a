"""Kannel end to end through the real api: the sender hands operator 905's messages to Kannel
(in front of the SMSC simulator), and Kannel calls the api's receipt endpoint
(`/api/v1/receipts/kannel/{provider}`, served over HTTP here) with each receipt: delivered
and undelivered settle, and the api's figures show them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from scripts.kannel import Kannel
from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_providers import (
    CALLBACK_SECRET,
    KANNEL_USERNAME,
    KANNEL_WEB_PASSWORD,
    counters_agree,
    kannel,
    smsc,
    smsc_process,
)
from tests.support import database
from tests.support.rig.processes import free_port
from tests.support.smsc import KANNEL_SYSTEM_ID, Smsc
from tests.support.waiting import wait_until

__all__ = ["kannel", "smsc", "smsc_process"]

pytestmark = pytest.mark.pipeline


def write_providers(path: Path, kannel: Kannel, stub_url: str, api_url: str) -> Path:
    path.write_text(
        f"""
providers:
  - name: stub
    kind: fabrique
    url: {stub_url}
    token: stub-token
  - name: gateway
    kind: kannel
    url: {kannel.sendsms_url}
    username: {KANNEL_USERNAME}
    password: {KANNEL_WEB_PASSWORD}
    callback_secret: {CALLBACK_SECRET}
    source_addr: MAILING
    callback_base_url: {api_url}
routes:
  - operators: ["905"]
    via: [gateway, stub]
  - operators: ["*"]
    via: [stub]
"""
    )
    return path


@pytest.fixture
async def served_api(
    pipeline: Pipeline, kannel: Kannel, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The api with the providers file, over HTTP on a free port (Kannel must reach it)."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    path = write_providers(tmp_path / "providers.yaml", kannel, pipeline.stub.url, api_url)
    settings = ApiSettings(
        database_url=database.sqlalchemy_url(pipeline.db_name),
        api_tokens=[ADMIN_TOKEN],
        db_pool_size=3,
        providers_file=path,
    )
    app = create_app(settings, events=NoEvents())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    try:
        await wait_until(started, timeout=30, message="the api listening")
        async with httpx.AsyncClient(
            base_url=f"{api_url}/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as client:
            yield client, path
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)


async def test_kannel_calls_the_api_with_receipts_that_settle_the_messages(
    pipeline: Pipeline, smsc: Smsc, served_api: tuple[httpx.AsyncClient, Path]
) -> None:
    client, path = served_api
    pipeline.seed_clients(20, operator_code="905")
    smsc.faults(undeliverable_numbers=[f"79{n:09d}" for n in range(1, 4)])

    async def bound() -> bool:
        return smsc.bound(KANNEL_SYSTEM_ID) >= 1

    await wait_until(bound, timeout=30, message="Kannel bound to the simulator")
    await pipeline.start(providers_file=path)
    mailing = await pipeline.create_mailing(text="Привет из шлюза")

    async def settled() -> dict[str, Any] | None:
        stats = (await client.get(f"/mailings/{mailing['id']}/stats")).json()
        d = stats["delivery"]
        return stats if d["delivered"] + d["undelivered"] == 20 else None

    stats = await wait_until(settled, timeout=90, message="20 receipts through Kannel")
    assert (stats["delivery"]["delivered"], stats["delivery"]["undelivered"]) == (17, 3)
    assert stats["counts"]["delivered"] == 17 and stats["counts"]["undelivered"] == 3
    (route,) = stats["delivery"]["by_route"]
    assert (route["provider"], route["operator_code"]) == ("gateway", "905")
    with pipeline.db() as conn:
        errors = conn.execute(
            "SELECT last_error FROM message WHERE mailing_id = %s AND status = 'undelivered'",
            [mailing["id"]],
        ).fetchall()
    assert len(errors) == 3 and all(e[0] for e in errors)  # the SMSC's stat / err
    providers = {p["name"]: p for p in (await client.get("/providers")).json()}
    assert providers["gateway"]["last_hour"]["delivered"] == 17
    assert not pipeline.deliveries()  # nothing went to the stub
    counters_agree(pipeline, mailing["id"])
