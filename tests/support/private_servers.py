"""Private, throwaway RabbitMQ and PostgreSQL servers for tests that stop and restart them.

The shared servers on 5672 and 5432 must never be stopped: a test that restarts its broker or
its database starts its own node (scripts/private_servers.py, which `make run` and `make test`
also use when the machine's servers refuse us), on free ports and in a temporary directory,
and always stops and removes it (`close()`), even when the test fails.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from alembic import command
from alembic.config import Config

from scripts.private_servers import PG_BIN, RABBITMQ_BIN, PrivatePostgres, PrivateRabbitMQ
from tests.support.database import ROOT

__all__ = ["PG_BIN", "RABBITMQ_BIN", "PrivatePostgres", "PrivateRabbitMQ", "migrate_url"]


def migrate_url(url: str, revision: str = "head") -> None:
    """`alembic upgrade` against any SQLAlchemy URL (tests.support.database.migrate takes a
    database name on the shared server)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    # Alembic's env.py runs its own event loop; keep it off the caller's thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, config, revision).result()
