"""Fixtures of the chaos suite: the shared servers (a private namespace on them) or private
RabbitMQ / PostgreSQL servers a scenario may stop and restart.

`chaos_slow` scenarios run when tests/chaos is named on the command line (`make test-chaos`),
when a `-m` expression is given, or with CHAOS_SLOW=1; a run of the whole tree (`make test`)
skips them, so CI gets the representative subset within its budget.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.rig import RETRY_DELAYS
from tests.support import database
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.private_servers import PrivatePostgres, PrivateRabbitMQ, migrate_url

CHAOS_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: resilience scenario with real processes (tests/chaos, make test-chaos)"
    )
    config.addinivalue_line(
        "markers",
        "chaos_slow: a chaos scenario over about a minute; skipped unless tests/chaos is named, "
        "a -m expression is given or CHAOS_SLOW=1",
    )


def _slow_wanted(config: pytest.Config) -> bool:
    if os.environ.get("CHAOS_SLOW") == "1" or config.option.markexpr:
        return True
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == CHAOS_DIR or CHAOS_DIR in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_wanted = _slow_wanted(config)
    skip = pytest.mark.skip(reason="chaos_slow: run with make test-chaos (or CHAOS_SLOW=1)")
    for item in items:
        if CHAOS_DIR not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.chaos)
        if not slow_wanted and item.get_closest_marker("chaos_slow"):
            item.add_marker(skip)


def _dsn(db_name: str) -> str:
    return database.sqlalchemy_url(db_name).replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A private namespace of exchanges and queues on the shared RabbitMQ, deleted afterwards."""
    name = new_namespace()
    try:
        yield name
    finally:
        await delete_namespace(name, RETRY_DELAYS)


@pytest.fixture
def servers(clean_db: str, namespace: str, tmp_path: Path) -> dict[str, Any]:
    """open_rig() arguments for the shared PostgreSQL (an emptied test database) and RabbitMQ."""
    return {
        "db_dsn": _dsn(clean_db),
        "db_url": database.sqlalchemy_url(clean_db),
        "amqp_url": AMQP_URL,
        "namespace": namespace,
        "log_dir": tmp_path,
    }


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of the test's own, always stopped and removed afterwards."""
    node = PrivateRabbitMQ()
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def private_postgres() -> Iterator[tuple[PrivatePostgres, str]]:
    """A PostgreSQL cluster of the test's own with a migrated database; always removed."""
    cluster = PrivatePostgres()
    try:
        cluster.start()
        name = f"chaos_{uuid.uuid4().hex[:8]}"
        cluster.create_database(name)
        migrate_url(cluster.sqlalchemy_url(name))
        yield cluster, name
    finally:
        cluster.close()
