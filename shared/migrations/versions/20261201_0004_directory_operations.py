"""directory operations: audit log (and the import/export tables, see below)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:50:00.000000

- `audit_log`: one row per change made through the API or the console (who, role, what,
  request id, source address, changed fields), written in the change's own transaction.
- `client.opted_out_at`: set when a client opted out; such a client gets no message.
- `client_import`: CSV imports of clients (status, counts, idempotency key, fingerprint) and
  `client_import_rejection`: every row an import refused, with the file's values and why.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
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


# --- directory-ops: opt-out, CSV imports -------------------------------------------------------


def _upgrade_directory_ops() -> None:
    op.add_column("client", sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "client_import",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("on_conflict", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("skipped", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rejected", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('running', 'done', 'failed')", name="status_known"),
        sa.CheckConstraint("on_conflict IN ('skip', 'update')", name="on_conflict_known"),
        sa.PrimaryKeyConstraint("id", name="pk_client_import"),
    )
    op.create_index(
        "uq_client_import_idempotency_key",
        "client_import",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "client_import_rejection",
        sa.Column("import_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("operator_code", sa.Text(), nullable=True),
        sa.Column("tag", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=True),
        sa.Column("opted_out", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["client_import.id"],
            name="fk_client_import_rejection_import_id_client_import",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "line", name="pk_client_import_rejection"),
    )


def _downgrade_directory_ops() -> None:
    op.drop_table("client_import_rejection")
    op.drop_index(
        "uq_client_import_idempotency_key",
        table_name="client_import",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_table("client_import")
    op.drop_column("client", "opted_out_at")


def upgrade() -> None:
    _upgrade_audit_log()
    _upgrade_directory_ops()


def downgrade() -> None:
    _downgrade_directory_ops()
    _downgrade_audit_log()
