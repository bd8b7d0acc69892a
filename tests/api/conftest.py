"""Fixtures for the admin API tests: direct database access and an unauthenticated client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import create_engine, create_session_factory
from shared.settings import ApiSettings
from tests.support import database


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the (emptied) test database, for seeding and checking."""
    with database.connect(clean_db) as conn:
        yield conn


@pytest.fixture
async def anon(api_app: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that sends no Authorization header (the database is not emptied:
    add `db` or `clean_db` where the data matters)."""
    transport = httpx.ASGITransport(app=api_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


@pytest.fixture
async def sessions(
    api_settings: ApiSettings, clean_db: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the (emptied) test database, for calling service functions directly."""
    engine = create_engine(api_settings)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()
