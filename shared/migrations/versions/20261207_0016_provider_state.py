"""providers: each sender's state per provider; recent outcomes by provider

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 23:10:00.000000

`provider_state` holds, per sender replica and provider, whether its binds are up, its
breaker's state and its current send rate, reported every few seconds
(`shared/provider_state.py`), for `GET /api/v1/providers` and the console's Providers page.

`ix_message_provider_recent` (updated_at) on the messages a provider took that are awaiting
or got a receipt: the last hour's outcomes per provider and the current rate read only the
rows that changed in that hour, never the whole table. A message update already changes an
indexed column (status), so it costs one more index entry, no lost HOT update.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

RECENT_WHERE = "provider IS NOT NULL AND status IN ('sent', 'delivered', 'undelivered')"


def upgrade() -> None:
    op.create_table(
        "provider_state",
        sa.Column("instance", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("can_take", sa.Boolean(), nullable=False),
        sa.Column("binds_up", sa.Integer(), nullable=True),
        sa.Column("binds", sa.Integer(), nullable=True),
        sa.Column("breaker_state", sa.Text(), server_default="closed", nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("rate", sa.Float(), server_default="0", nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("instance", "provider", name="pk_provider_state"),
    )  # fmt: skip
    op.create_index(
        "ix_message_provider_recent",
        "message",
        ["updated_at"],
        postgresql_where=sa.text(RECENT_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_message_provider_recent", table_name="message")
    op.drop_table("provider_state")
