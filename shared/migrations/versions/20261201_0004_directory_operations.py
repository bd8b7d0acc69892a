"""directory operations: audit log (and the import/export tables, see below)

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01 21:50:00.000000

- `audit_log`: one row per change made through the API or the console (who, role, what,
  request id, source address, changed fields), written in the change's own transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0002"  # the lead re-chains 0003/0004/0005 at merge
branch_labels = None
depends_on = None


def _upgrade_audit_log() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_name", sa.Text(), nullable=False),
        sa.Column("actor_kind", sa.Text(), nullable=False),
        sa.Column("actor_role", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_type", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("changes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint(
            "actor_kind IN ('token', 'user')", name=op.f("ck_audit_log_actor_kind_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_name_id", "audit_log", ["actor_name", "id"])
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"])
    op.create_index(
        "ix_audit_log_target_type_target_id_id", "audit_log", ["target_type", "target_id", "id"]
    )


def _downgrade_audit_log() -> None:
    op.drop_table("audit_log")  # drops its indexes too


# --- import / export / opt-out (the import/export developer): add your tables and columns in
# --- your own pair of functions here, e.g. `_upgrade_imports()` / `_downgrade_imports()`, and
# --- call them from upgrade() (after the audit log) and downgrade() (before it) below.


def upgrade() -> None:
    _upgrade_audit_log()


def downgrade() -> None:
    _downgrade_audit_log()
