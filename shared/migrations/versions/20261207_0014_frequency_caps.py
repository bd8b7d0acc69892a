"""frequency caps: a per-client summary of sent messages kept by triggers; transactional

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 23:00:00.000000

`client_contact (client_id, bucket, count)` counts each client's sent messages by the UTC
minute of their `sent_at`, so a frequency cap (shared/domain/frequency_cap.py) reads a few rows
by key instead of scanning `message`. Statement-level triggers on `message` keep it: a
statement that makes messages `sent` (or, rarely, takes a `sent` one back: an admin's resend
works on failed ones only) adds one upsert per (client, minute); any other statement (a
fan-out, a lease, a claim) finds no sent row in its transition tables and writes nothing.
Test sends and `transactional` mailings are not counted. Messages sent in the last 366 days
(the longest cap period) are counted here once. Messages not yet sent are reservations, read
from `message` by its (mailing_id, client_id) key where a cap is checked.

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

# A sent message of a counted mailing counts in the UTC minute it was sent.
_BUCKET = "date_trunc('minute', coalesce({r}.sent_at, now()), 'UTC')"
_COUNTED = (
    "{r}.status = 'sent' AND NOT {r}.is_test AND {r}.client_id IS NOT NULL"
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


FUNCTIONS = {
    "client_contact_on_insert": _APPLY.format(deltas=_rows("new_rows", 1)),
    "client_contact_on_update": _APPLY.format(
        deltas=_rows("new_rows", 1) + " UNION ALL " + _rows("old_rows", -1)
    ),
}
TRIGGERS = {
    "client_contact_insert": ("INSERT", "NEW TABLE AS new_rows", "client_contact_on_insert"),
    "client_contact_update": (
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "client_contact_on_update",
    ),
}

BACKFILL = f"""
    INSERT INTO client_contact (client_id, bucket, count)
    SELECT m.client_id, {_BUCKET.format(r="m")}, count(*) FROM message m
    WHERE m.status = 'sent' AND NOT m.is_test AND m.client_id IS NOT NULL
      AND m.sent_at > now() - interval '366 days'
      AND m.mailing_id NOT IN (SELECT id FROM mailing WHERE transactional)
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
