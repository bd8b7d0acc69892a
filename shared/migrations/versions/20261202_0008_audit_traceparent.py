"""audit entries keep the W3C trace context of the request that made them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 04:20:00.000000

`audit_log.traceparent`: the `traceparent` of the API request or console action behind the
entry (NULL when tracing is off). The scheduler reads a mailing's latest entry when it starts
the mailing, so the activation span links to the request that created or last changed it, and
the jobs carry that request's id, whichever scheduler replica starts it and whether or not
the `mailing.*` event reached that replica first (docs/TRACING.md). An operator can also go
from an audit entry to its trace.

A nullable column without a default is a catalogue-only change: instant on any table size.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("traceparent", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_log", "traceparent")
