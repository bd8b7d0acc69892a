"""providers: which provider took each message, delivery receipts and replies

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 23:00:00.000000

`message.provider` names the provider (from PROVIDERS_FILE, or `default`) that accepted the
message, `message.provider_message_id` the id that provider gave it (an SMSC's submit_sm_resp
id: the FIRST part's for a long text; the fabrique kind: our own id). Receipts are matched by
(provider, provider_message_id), through a partial index (only sent messages have an id).

`message_receipt_pending`: receipts that came before the message's id was written (or for ids
never seen), kept until the message is known or they are old enough to be counted unknown
(shared/receipts.py). `message_reply`: texts from phones (SMPP deliver_sm that are not
receipts), with the client and mailing they answer when known; `stop` marks an exact stop word
that opted the client out.

The message status check gains `delivered` and `undelivered`. The counters need nothing: the
statement triggers (0009) count any status.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BEFORE = ("pending", "queued", "sending", "sent", "retrying", "failed", "expired", "cancelled")
_AFTER = (*_BEFORE, "delivered", "undelivered")


def _status_check(statuses: tuple[str, ...]) -> None:
    # On the partitioned table: dropped from and added to every partition.
    op.drop_constraint(op.f("ck_message_status_known"), "message", type_="check")
    listed = ", ".join(f"'{s}'" for s in statuses)
    op.create_check_constraint(op.f("ck_message_status_known"), "message", f"status IN ({listed})")


def upgrade() -> None:
    _status_check(_AFTER)
    op.add_column("message", sa.Column("provider", sa.Text(), nullable=True))
    op.add_column("message", sa.Column("provider_message_id", sa.Text(), nullable=True))
    op.create_index(
        "ix_message_provider_message_id",
        "message",
        ["provider_message_id"],
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
    )
    op.create_table(
        "message_receipt_pending",
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("provider_message_id", sa.Text(), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "provider", "provider_message_id", name=op.f("pk_message_receipt_pending")
        ),
    )
    op.create_table(
        "message_reply",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("client_id", sa.BigInteger(), nullable=True),
        sa.Column("mailing_id", sa.BigInteger(), nullable=True),
        sa.Column("stop", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_reply")),
    )
    op.create_index("ix_message_reply_mailing_id_id", "message_reply", ["mailing_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_message_reply_mailing_id_id", table_name="message_reply")
    op.drop_table("message_reply")
    op.drop_table("message_receipt_pending")
    op.drop_index("ix_message_provider_message_id", table_name="message")
    op.drop_column("message", "provider_message_id")
    op.drop_column("message", "provider")
    op.execute("UPDATE message SET status = 'sent' WHERE status IN ('delivered', 'undelivered')")
    _status_check(_BEFORE)
