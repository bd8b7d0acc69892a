"""console: outcomes per minute, for today's totals and the send-rate chart

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:00:00.000000

`message_minute` counts, per mailing and minute, the messages that reached sent, failed or
expired and the attempts that turned into a retry. A statement-level trigger keeps it in the
statement that changes the statuses (as `message_count`), so the dashboard reads at most
60 rows per mailing for the last hour instead of scanning `message`.

`provider_status` holds each sender's circuit-breaker state, reported on change and every
few seconds, so the dashboard can show whether the provider is being sent to.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Rows are upserted in key order so concurrent batches lock them in the same order.
TRIGGER_UP = [
    """
    CREATE FUNCTION message_minute_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO message_minute AS mm (minute, mailing_id, status, count)
        SELECT date_trunc('minute', now()), n.mailing_id, n.status, count(*)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status <> o.status AND n.status IN ('sent', 'failed', 'expired', 'retrying')
        GROUP BY n.mailing_id, n.status
        ORDER BY n.mailing_id, n.status
        ON CONFLICT (minute, mailing_id, status) DO UPDATE SET count = mm.count + EXCLUDED.count;
        RETURN NULL;
    END $$
    """,
    """CREATE TRIGGER message_minute_update AFTER UPDATE ON message
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_minute_on_update()""",
]


def upgrade() -> None:
    op.create_table(
        "message_minute",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mailing_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("minute", "mailing_id", "status", name="pk_message_minute"),
    )
    op.create_table(
        "provider_status",
        sa.Column("instance", sa.Text(), nullable=False),
        sa.Column("breaker_state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("instance", name="pk_provider_status"),
    )  # fmt: skip
    for statement in TRIGGER_UP:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER message_minute_update ON message")
    op.execute("DROP FUNCTION message_minute_on_update()")
    op.drop_table("message_minute")
    op.drop_table("provider_status")
