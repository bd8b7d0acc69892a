"""frequency caps: a per-client contact summary kept by triggers; transactional mailings

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 23:00:00.000000

`client_contact (client_id, bucket, count)` says what each client has against a frequency cap
(shared/domain/frequency_cap.py) without scanning `message`: an open message of a counted
mailing is a reservation in the bucket `infinity`; a sent one counts in the UTC minute of its
`sent_at`; cancelled, expired and failed ones count nothing. Statement-level triggers on
`message` keep it, one upsert per (client, bucket) a statement changes on balance (a lease,
pending -> queued, changes none). Test sends and `transactional` mailings are not counted.
Existing open messages and those sent in the last 366 days (the longest cap window) are
counted here once.

`mailing.transactional` (default false) and `mailing.frequency_cap` (the mailing's own cap in
the canonical `N/<period>` form; NULL: FREQUENCY_CAP) are catalogue-only column additions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

OPEN = "('pending', 'queued', 'sending', 'retrying')"
# Where a message counts: its reservation while open, the minute it was sent once sent.
_BUCKET = (
    "CASE WHEN {r}.status = 'sent'"
    " THEN date_trunc('minute', coalesce({r}.sent_at, now()), 'UTC')"
    " ELSE timestamptz 'infinity' END"
)
_COUNTED = (
    "NOT {r}.is_test AND {r}.client_id IS NOT NULL"  # noqa: S608 (constant fragments)
    f" AND ({{r}}.status IN {OPEN} OR {{r}}.status = 'sent')"
    " AND {r}.mailing_id NOT IN (SELECT id FROM mailing WHERE transactional)"
)


def _rows(table: str, delta: int) -> str:
    return (
        f"SELECT r.client_id, {_BUCKET.format(r='r')} AS bucket, {delta} AS delta"  # noqa: S608 (constant fragments)
        f" FROM {table} r WHERE {_COUNTED.format(r='r')}"
    )


_APPLY = """
    INSERT INTO client_contact AS cc (client_id, bucket, count)
    SELECT client_id, bucket, sum(delta) FROM ({deltas}) AS d
    GROUP BY client_id, bucket
    HAVING sum(delta) <> 0
    ORDER BY client_id, bucket
    ON CONFLICT (client_id, bucket) DO UPDATE SET count = cc.count + EXCLUDED.count;
"""

# A deleted message gives back its reservation; a sent one stays counted (it was sent).
_DELETED_OPEN = (
    "SELECT r.client_id, timestamptz 'infinity' AS bucket, -1 AS delta FROM old_rows r"  # noqa: S608 (constant fragments)
    f" WHERE r.status IN {OPEN} AND {_COUNTED.format(r='r')}"
)

FUNCTIONS = {
    "client_contact_on_insert": _APPLY.format(deltas=_rows("new_rows", 1)),
    "client_contact_on_update": _APPLY.format(
        deltas=_rows("new_rows", 1) + " UNION ALL " + _rows("old_rows", -1)
    ),
    "client_contact_on_delete": _APPLY.format(deltas=_DELETED_OPEN),
}
TRIGGERS = {
    "client_contact_insert": ("INSERT", "NEW TABLE AS new_rows", "client_contact_on_insert"),
    "client_contact_update": (
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "client_contact_on_update",
    ),
    "client_contact_delete": ("DELETE", "OLD TABLE AS old_rows", "client_contact_on_delete"),
}

BACKFILL = f"""
    INSERT INTO client_contact (client_id, bucket, count)
    SELECT m.client_id, {_BUCKET.format(r="m")}, count(*) FROM message m
    WHERE NOT m.is_test AND m.client_id IS NOT NULL
      AND (m.status IN {OPEN}
           OR (m.status = 'sent' AND m.sent_at > now() - interval '366 days'))
    GROUP BY 1, 2
"""  # noqa: S608 (constant fragments)


def upgrade() -> None:
    op.add_column(
        "mailing",
        sa.Column("transactional", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("mailing", sa.Column("frequency_cap", sa.Text(), nullable=True))
    op.create_table(
        "client_contact",
        sa.Column("client_id", sa.BigInteger(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "bucket", name=op.f("pk_client_contact")),
    )
    for name, body in FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {body} RETURN NULL; END $$"
        )
    for name, (event, referencing, function) in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON message REFERENCING {referencing}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    op.execute(BACKFILL)


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON message")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("client_contact")
    op.drop_column("mailing", "frequency_cap")
    op.drop_column("mailing", "transactional")
