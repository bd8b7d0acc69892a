"""console sessions: users signed in to the admin console through OpenID Connect

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:45:00.000000

The cookie holds a random token; the row's id is its SHA-256. A session ends at
`expires_at` (absolute lifetime) or after the idle lifetime since `last_seen_at`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_session",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("login", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("email", sa.Text(), server_default="", nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("id_token", sa.Text(), nullable=True),
        sa.Column("csrf_token", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.Text(), server_default="", nullable=False),
        sa.Column("address", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint("role IN ('admin', 'viewer')", name=op.f("ck_console_session_role")),
        sa.PrimaryKeyConstraint("id", name="pk_console_session"),
    )
    op.create_index("ix_console_session_subject", "console_session", ["subject"])
    op.create_index("ix_console_session_expires_at", "console_session", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_session_expires_at", table_name="console_session")
    op.drop_index("ix_console_session_subject", table_name="console_session")
    op.drop_table("console_session")
