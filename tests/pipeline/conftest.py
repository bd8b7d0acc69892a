"""End-to-end fixtures: real scheduler and sender processes, the provider stub, the API.

The `Pipeline` object's methods are the rig's (tests/support/rig/core.py); here only how this
suite runs them: the stub on the test's own loop, the API in-process (ASGI transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from services.api.app import create_app
from services.api.events import AmqpEvents
from services.provider_stub.app import RunningStub, start_stub
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.rig import env
from tests.support.rig.core import RigBase
from tests.support.rig.data import TERMINAL
from tests.support.rig.processes import ProcessGroup
from tests.support.rig.stub import deliveries_by_id

pytestmark = pytest.mark.pipeline

RETRY_DELAYS = env.RETRY_DELAYS
__all__ = ["RETRY_DELAYS", "TERMINAL", "Pipeline"]


@dataclass
class Pipeline(RigBase):
    db_name: str
    namespace: str
    stub: RunningStub
    api: httpx.AsyncClient
    processes: ProcessGroup

    def db(self) -> psycopg.Connection[Any]:
        return database.connect(self.db_name)

    def deliveries(self) -> dict[int, dict[str, Any]]:
        """What the stub accepted: message id -> {phone, text, count, first_at, last_at}."""
        return deliveries_by_id(self.stub.state)

    def set_faults(self, **faults: Any) -> None:
        self.stub.state.faults = self.stub.state.faults.merged(faults)

    def stub_requests(self) -> int:
        return int(self.stub.state.requests_total)


@pytest.fixture
async def pipeline(clean_db: str, tmp_path: Path) -> AsyncIterator[Pipeline]:
    namespace = new_namespace()
    stub = await start_stub()
    base_env = env.FAST | env.service_env(
        database_url=database.sqlalchemy_url(clean_db),
        amqp_url=AMQP_URL,
        namespace=namespace,
        provider_url=stub.url,
        provider_token="stub-token",
    )
    processes = ProcessGroup(base_env, tmp_path)
    settings = ApiSettings(
        database_url=database.sqlalchemy_url(clean_db),
        amqp_url=AMQP_URL,
        amqp_namespace=namespace,
        api_tokens=[SecretStr(ADMIN_TOKEN)],
        db_pool_size=3,
    )
    app = create_app(settings, AmqpEvents(AMQP_URL, namespace))
    pipeline: Pipeline | None = None
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://api.test/api/v1",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as api:
                pipeline = Pipeline(clean_db, namespace, stub, api, processes)
                yield pipeline
    finally:
        processes.stop_all()
        await stub.close()
        await delete_namespace(namespace, RETRY_DELAYS)
        for line in pipeline.error_lines() if pipeline else []:
            print(line)
