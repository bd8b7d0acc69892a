"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 13:42:51.961396
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Per-mailing, per-status counters maintained in the statement that changes a status, so the
# stats endpoints read a handful of rows instead of grouping millions. Statement-level triggers
# with transition tables aggregate a whole batch into one upsert per (mailing, status); rows are
# upserted in key order so concurrent batches lock counters in the same order (no deadlocks).
_APPLY_DELTAS = """
    INSERT INTO message_count AS c (mailing_id, status, count)
    SELECT mailing_id, status, sum(delta) FROM ({deltas}) AS d
    GROUP BY mailing_id, status
    HAVING sum(delta) <> 0
    ORDER BY mailing_id, status
    ON CONFLICT (mailing_id, status) DO UPDATE SET count = c.count + EXCLUDED.count;
"""
_NEW = "SELECT mailing_id, status, 1 AS delta FROM new_rows"
_OLD = "SELECT mailing_id, status, -1 AS delta FROM old_rows"

COUNTER_TRIGGERS_UP = [
    f"""
    CREATE FUNCTION message_count_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_APPLY_DELTAS.format(deltas=_NEW)} RETURN NULL; END $$
    """,
    f"""
    CREATE FUNCTION message_count_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_APPLY_DELTAS.format(deltas=_NEW + " UNION ALL " + _OLD)} RETURN NULL; END $$
    """,
    f"""
    CREATE FUNCTION message_count_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_APPLY_DELTAS.format(deltas=_OLD)} RETURN NULL; END $$
    """,
    """CREATE TRIGGER message_count_insert AFTER INSERT ON message
       REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_count_on_insert()""",
    """CREATE TRIGGER message_count_update AFTER UPDATE ON message
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_count_on_update()""",
    """CREATE TRIGGER message_count_delete AFTER DELETE ON message
       REFERENCING OLD TABLE AS old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_count_on_delete()""",
]
COUNTER_TRIGGERS_DOWN = [
    "DROP TRIGGER message_count_delete ON message",
    "DROP TRIGGER message_count_update ON message",
    "DROP TRIGGER message_count_insert ON message",
    "DROP FUNCTION message_count_on_delete()",
    "DROP FUNCTION message_count_on_update()",
    "DROP FUNCTION message_count_on_insert()",
]


def upgrade() -> None:
    op.create_table(
        "client",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("operator_code", sa.Text(), nullable=False),
        sa.Column("tag", sa.Text(), server_default="", nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "operator_code ~ '^[0-9]{3}$'", name=op.f("ck_client_operator_code_format")
        ),
        sa.CheckConstraint("phone ~ '^7[0-9]{10}$'", name=op.f("ck_client_phone_format")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client")),
    )
    op.create_index(
        "ix_client_operator_code_tag",
        "client",
        ["operator_code", "tag"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "uq_client_phone_live",
        "client",
        ["phone"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "mailing",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "filter_operator_codes",
            sa.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "filter_tags",
            sa.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("send_window_start", sa.Time(), nullable=True),
        sa.Column("send_window_end", sa.Time(), nullable=True),
        sa.Column("status", sa.Text(), server_default="scheduled", nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("idempotency_fingerprint", sa.Text(), nullable=True),
        sa.Column("fanout_max_client_id", sa.BigInteger(), nullable=True),
        sa.Column("fanout_cursor", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fanout_done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('scheduled', 'running', 'paused', 'completed', 'cancelled')",
            name=op.f("ck_mailing_status_known"),
        ),
        sa.CheckConstraint(
            "(send_window_start IS NULL) = (send_window_end IS NULL)",
            name=op.f("ck_mailing_send_window_pair"),
        ),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_mailing_end_after_start")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailing")),
    )
    op.create_index(
        "ix_mailing_status_start_at",
        "mailing",
        ["status", "start_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('scheduled', 'running')"),
    )
    op.create_index(
        "uq_mailing_idempotency_key",
        "mailing",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "message",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mailing_id", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'queued', 'sending', 'sent', 'retrying', "
            "'failed', 'expired', 'cancelled')",
            name=op.f("ck_message_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["client.id"], name=op.f("fk_message_client_id_client")
        ),
        sa.ForeignKeyConstraint(
            ["mailing_id"], ["mailing.id"], name=op.f("fk_message_mailing_id_mailing")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
        sa.UniqueConstraint(
            "mailing_id", "client_id", name=op.f("uq_message_mailing_id_client_id")
        ),
    )
    op.create_index(
        "ix_message_client_id_open",
        "message",
        ["client_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'queued', 'sending', 'retrying')"),
    )
    op.create_index(
        "ix_message_due",
        "message",
        ["mailing_id", "not_before"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_message_lease_until",
        "message",
        ["lease_until"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'sending', 'retrying')"),
    )
    op.create_index("ix_message_mailing_id_id", "message", ["mailing_id", "id"], unique=False)
    op.create_index(
        "ix_message_mailing_id_status_id", "message", ["mailing_id", "status", "id"], unique=False
    )
    op.create_table(
        "message_count",
        sa.Column("mailing_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["mailing_id"], ["mailing.id"], name=op.f("fk_message_count_mailing_id_mailing")
        ),
        sa.PrimaryKeyConstraint("mailing_id", "status", name=op.f("pk_message_count")),
    )
    op.execute("CREATE SEQUENCE message_token_seq AS bigint")
    for statement in COUNTER_TRIGGERS_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in COUNTER_TRIGGERS_DOWN:
        op.execute(statement)
    op.execute("DROP SEQUENCE message_token_seq")
    op.drop_table("message_count")
    op.drop_index("ix_message_mailing_id_status_id", table_name="message")
    op.drop_index("ix_message_mailing_id_id", table_name="message")
    op.drop_index(
        "ix_message_lease_until",
        table_name="message",
        postgresql_where=sa.text("status IN ('queued', 'sending', 'retrying')"),
    )
    op.drop_index(
        "ix_message_due", table_name="message", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_index(
        "ix_message_client_id_open",
        table_name="message",
        postgresql_where=sa.text("status IN ('pending', 'queued', 'sending', 'retrying')"),
    )
    op.drop_table("message")
    op.drop_index(
        "uq_mailing_idempotency_key",
        table_name="mailing",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index(
        "ix_mailing_status_start_at",
        table_name="mailing",
        postgresql_where=sa.text("status IN ('scheduled', 'running')"),
    )
    op.drop_table("mailing")
    op.drop_index(
        "uq_client_phone_live", table_name="client", postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.drop_index(
        "ix_client_operator_code_tag",
        table_name="client",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_table("client")
