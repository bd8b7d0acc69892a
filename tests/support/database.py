"""Throwaway PostgreSQL databases for tests, built with the real migrations."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]
# The server's maintenance database; trust auth as on the development and CI machines.
ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_dsn(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


def sqlalchemy_url(database: str) -> str:
    return _server_dsn(database).replace("postgresql://", "postgresql+psycopg://", 1)


def create_database(prefix: str = "mailing_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic_config(database: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = sqlalchemy_url(database)
    config.attributes["configure_logger"] = False
    return config


def _in_thread(fn: object, *args: object) -> None:
    # Alembic's env.py runs its own event loop; keep it off the test loop's thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(fn, *args).result()  # type: ignore[arg-type]


def migrate(database: str, revision: str = "head") -> None:
    _in_thread(command.upgrade, alembic_config(database), revision)


def downgrade(database: str, revision: str = "base") -> None:
    _in_thread(command.downgrade, alembic_config(database), revision)


def truncate_all(database: str) -> None:
    with psycopg.connect(_server_dsn(database), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE audit_log, client_import_rejection, client_import, message_count_folded,"
            " message_count_delta, message_minute, provider_status, message, mailing, client,"
            " client_contact, message_receipt_pending, message_reply, provider_state"
            " RESTART IDENTITY CASCADE"
        )


def connect(database: str) -> psycopg.Connection:
    return psycopg.connect(_server_dsn(database), autocommit=True)
