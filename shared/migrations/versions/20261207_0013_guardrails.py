"""guardrails: approval of large sends, and how many imported phones were normalised

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07 22:30:00.000000

`mailing.status` may be `awaiting_approval`: a mailing over APPROVAL_THRESHOLD recipients
waits there until an admin other than its creator approves it (docs/GUARDRAILS.md). The
scheduler starts only `scheduled` mailings, so nothing else changes for it. `created_by` names
who created the mailing (NULL for mailings created before); `approved_by` and `approved_at`
who approved it last (cleared when an edit sends it back).

`client_import.normalized`: rows whose phone was written another way (`8 916 123-45-67`) and
imported as `79161234567`.

The mailing table is small (one row a mailing): its status check is replaced in place. New
nullable columns and a column with a constant default are catalogue-only changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

_BEFORE = ("scheduled", "running", "paused", "completed", "cancelled")
_AFTER = (*_BEFORE, "awaiting_approval")


def _status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_mailing_status_known"), "mailing", type_="check")
    listed = ", ".join(f"'{s}'" for s in statuses)
    op.create_check_constraint(op.f("ck_mailing_status_known"), "mailing", f"status IN ({listed})")


def upgrade() -> None:
    _status_check(_AFTER)
    op.add_column("mailing", sa.Column("created_by", sa.Text(), nullable=True))
    op.add_column("mailing", sa.Column("approved_by", sa.Text(), nullable=True))
    op.add_column("mailing", sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "client_import",
        sa.Column("normalized", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("client_import", "normalized")
    op.drop_column("mailing", "approved_at")
    op.drop_column("mailing", "approved_by")
    op.drop_column("mailing", "created_by")
    op.execute("UPDATE mailing SET status = 'scheduled' WHERE status = 'awaiting_approval'")
    _status_check(_BEFORE)
