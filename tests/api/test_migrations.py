"""The migrations: up, down to nothing, up again, and in step with the models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from shared.models import Base, include_name
from tests.support import database

APP_TABLES = {
    "client",
    "mailing",
    "message",
    "message_count_folded",
    "message_count_delta",
    "audit_log",
    "client_import",
    "client_import_rejection",
    "message_minute",
    "console_session",
    "provider_status",
    "client_contact",
    "message_receipt_pending",
    "message_reply",
    "provider_state",
}


@pytest.fixture
def fresh_db() -> Iterator[str]:
    """An empty throwaway database, dropped afterwards whatever happens."""
    name = database.create_database("mailing_migrations")
    try:
        yield name
    finally:
        database.drop_database(name)


def schema_objects(name: str) -> dict[str, set[str]]:
    with database.connect(name) as conn:

        def names(sql: str) -> set[str]:
            return {row[0] for row in conn.execute(sql).fetchall()}

        return {
            # Tables and partitioned tables, not their partitions (listed apart).
            "tables": names(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            ),
            "partitions": names(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'public.message'::regclass"
            )
            if conn.execute("SELECT to_regclass('public.message')").fetchone()[0]  # type: ignore[index]
            else set(),
            "sequences": names(
                "SELECT sequence_name FROM information_schema.sequences"
                " WHERE sequence_schema = 'public'"
            ),
            "functions": names(
                "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public'"
            ),
            "triggers": names("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"),
            "indexes": names("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"),
        }


def current_revision(name: str) -> str | None:
    with database.connect(name) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def head_revision() -> str:
    script = ScriptDirectory.from_config(database.alembic_config("unused"))
    head = script.get_current_head()
    assert head is not None
    return head


def test_upgrade_downgrade_upgrade(fresh_db: str) -> None:
    database.migrate(fresh_db)
    up = schema_objects(fresh_db)
    assert up["tables"] == APP_TABLES | {"alembic_version"}
    assert current_revision(fresh_db) == head_revision()
    assert "message_token_seq" in up["sequences"]
    assert {"message_count_insert", "message_count_update", "client_contact_update"} <= up[
        "triggers"
    ]
    assert {"uq_client_phone_live", "uq_mailing_idempotency_key", "ix_message_due"} <= up["indexes"]

    database.downgrade(fresh_db, "base")
    down = schema_objects(fresh_db)
    assert down["tables"] == {"alembic_version"}
    assert down["sequences"] == set()
    assert down["functions"] == set()
    assert down["triggers"] == set()
    assert current_revision(fresh_db) is None

    database.migrate(fresh_db)
    assert schema_objects(fresh_db) == up
    assert current_revision(fresh_db) == head_revision()


def test_migrated_schema_works_after_a_round_trip(fresh_db: str) -> None:
    database.migrate(fresh_db)
    database.downgrade(fresh_db, "base")
    database.migrate(fresh_db)
    with database.connect(fresh_db) as conn:
        conn.execute(
            "INSERT INTO client (phone, operator_code, timezone)"
            " VALUES ('79123456789', '912', 'UTC')"
        )
        conn.execute(
            "INSERT INTO mailing (start_at, end_at, text)"
            " VALUES (now(), now() + interval '1 hour', 'x')"
        )
        conn.execute("INSERT INTO message (mailing_id, client_id) VALUES (1, 1)")
        counters = conn.execute("SELECT mailing_id, status, count FROM message_count").fetchall()
        assert counters == [(1, "pending", 1)]


def test_models_match_the_migrations(fresh_db: str) -> None:
    """What `alembic check` does: autogenerate against the migrated database finds nothing
    (stricter: server defaults are compared too)."""
    database.migrate(fresh_db)
    engine = sa.create_engine(database.sqlalchemy_url(fresh_db))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_name": include_name,
                },
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_compare_metadata_would_notice_a_drift(fresh_db: str) -> None:
    """The check above is not vacuous: a column the migrations lack shows up as a difference."""
    database.migrate(fresh_db)
    metadata = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    sa.Table("client", metadata, sa.Column("nickname", sa.Text()), extend_existing=True)
    engine = sa.create_engine(database.sqlalchemy_url(fresh_db))
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert [(d[0], d[3].name) for d in diff if d[0] == "add_column"] == [("add_column", "nickname")]
