from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from services.api.app import create_app
from shared.settings import ApiSettings
from tests.support import database
from tests.support.broker import AMQP_URL

# As long and random-looking as the api requires at start (services.api.auth.weak_tokens).
ADMIN_TOKEN = "test-admin-9f3c1e7a5b2d8046c1f9e3a7b5d20468"  # a bare entry: the admin token-1
VIEWER_TOKEN = "test-viewer-2b8e4f6a1c9d3075e8b2f4a6c1d93750"  # `reports:viewer:<this>`


@pytest.fixture(scope="session")
def db_name() -> Iterator[str]:
    """One database per test session, built by the real migrations."""
    name = database.create_database()
    try:
        database.migrate(name)
        yield name
    finally:
        database.drop_database(name)


@pytest.fixture(scope="session")
def database_url(db_name: str) -> str:
    return database.sqlalchemy_url(db_name)


@pytest.fixture
def clean_db(db_name: str) -> str:
    database.truncate_all(db_name)
    return db_name


@pytest.fixture(scope="session")
def api_settings(database_url: str) -> ApiSettings:
    return ApiSettings(
        database_url=database_url,
        amqp_url=AMQP_URL,
        api_tokens=[
            SecretStr(ADMIN_TOKEN),
            SecretStr("second-token"),
            SecretStr(f"reports:viewer:{VIEWER_TOKEN}"),
        ],
        # Its own broker namespace, so test runs never wake a real scheduler.
        amqp_namespace=f"test-{uuid.uuid4().hex[:8]}",
        db_pool_size=5,
        # Many tests send wrong tokens to this one app from one address: the limit has its own
        # test (tests/security/test_deployment_defaults.py).
        auth_failures_per_minute=1_000_000,
    )


@pytest.fixture(scope="session")
async def api_app(api_settings: ApiSettings) -> AsyncIterator[object]:
    app = create_app(api_settings)
    async with LifespanManager(app) as manager:
        yield manager.app


@pytest.fixture
async def api(api_app: object, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client of the admin API over an empty database."""
    transport = httpx.ASGITransport(app=api_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://api.test/api/v1",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield client
