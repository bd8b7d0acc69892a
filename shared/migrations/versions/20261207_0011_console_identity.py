"""audit entries name a console user by issuer and subject; sessions re-check groups

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-07 22:10:00.000000

`audit_log.actor_subject`, `audit_log.actor_issuer`: who a console user is (the identity
provider's `sub` and issuer, which the user cannot change; `actor_name` stays the login for
display). NULL for API tokens and for entries written before this migration.

`console_session.provider_tokens`: the provider's refresh (or access) token, sealed with a key
derived from the session's cookie, so only a request carrying the cookie can use it;
`console_session.groups_checked_at`: when the account's groups were last read from the
provider (at sign-in, then every UI_GROUPS_RECHECK_S on a person's request).

Nullable columns without a default: catalogue-only changes, instant on any table size.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("actor_subject", sa.Text(), nullable=True))
    op.add_column("audit_log", sa.Column("actor_issuer", sa.Text(), nullable=True))
    op.add_column("console_session", sa.Column("provider_tokens", sa.Text(), nullable=True))
    op.add_column(
        "console_session",
        sa.Column("groups_checked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("console_session", "groups_checked_at")
    op.drop_column("console_session", "provider_tokens")
    op.drop_column("audit_log", "actor_issuer")
    op.drop_column("audit_log", "actor_subject")
