"""test sends: a message may be a test to one phone, which no counter counts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:40:00.000000

`POST /mailings/{id}/test` sends the mailing's text to one phone through the real sender path.
Its message row has `is_test` set, its own `phone` (the phone need not be a client) and no
`client_id`. The counter triggers (`message_count`, `message_minute`) skip test rows, so a
mailing's statistics never count them; `(mailing_id, client_id)` stays unique for the fan-out
because NULL client ids never collide.

Adding a column with a constant default and dropping NOT NULL are catalogue-only changes:
instant on a table of any size.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_APPLY_DELTAS = """
    INSERT INTO message_count AS c (mailing_id, status, count)
    SELECT mailing_id, status, sum(delta) FROM ({deltas}) AS d
    GROUP BY mailing_id, status
    HAVING sum(delta) <> 0
    ORDER BY mailing_id, status
    ON CONFLICT (mailing_id, status) DO UPDATE SET count = c.count + EXCLUDED.count;
"""


def _counter_functions(where: str) -> list[str]:
    new = f"SELECT mailing_id, status, 1 AS delta FROM new_rows{where}"  # noqa: S608 (constant fragments)
    old = f"SELECT mailing_id, status, -1 AS delta FROM old_rows{where}"  # noqa: S608
    return [
        f"""
        CREATE OR REPLACE FUNCTION message_count_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {_APPLY_DELTAS.format(deltas=new)} RETURN NULL; END $$
        """,
        f"""
        CREATE OR REPLACE FUNCTION message_count_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {_APPLY_DELTAS.format(deltas=new + " UNION ALL " + old)} RETURN NULL; END $$
        """,
        f"""
        CREATE OR REPLACE FUNCTION message_count_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {_APPLY_DELTAS.format(deltas=old)} RETURN NULL; END $$
        """,
    ]


def _minute_function(where: str) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION message_minute_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO message_minute AS mm (minute, mailing_id, status, count)
        SELECT date_trunc('minute', now()), n.mailing_id, n.status, count(*)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status <> o.status AND n.status IN ('sent', 'failed', 'expired', 'retrying')
          {where}
        GROUP BY n.mailing_id, n.status
        ORDER BY n.mailing_id, n.status
        ON CONFLICT (minute, mailing_id, status) DO UPDATE SET count = mm.count + EXCLUDED.count;
        RETURN NULL;
    END $$
    """  # noqa: S608 (constant fragments)


def upgrade() -> None:
    op.add_column(
        "message", sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("message", sa.Column("phone", sa.Text(), nullable=True))
    op.alter_column("message", "client_id", existing_type=sa.BigInteger(), nullable=True)
    # NOT VALID: existing rows are all regular messages; nothing to scan on a large table.
    op.execute(
        "ALTER TABLE message ADD CONSTRAINT ck_message_test_or_client CHECK "
        "((is_test AND phone IS NOT NULL AND client_id IS NULL) "
        "OR (NOT is_test AND client_id IS NOT NULL)) NOT VALID"
    )
    for statement in [*_counter_functions(" WHERE NOT is_test"),
                      _minute_function("AND NOT n.is_test")]:  # fmt: skip
        op.execute(statement)


def downgrade() -> None:
    op.execute("DELETE FROM message WHERE is_test")
    for statement in [*_counter_functions(""), _minute_function("")]:
        op.execute(statement)
    op.execute("ALTER TABLE message DROP CONSTRAINT ck_message_test_or_client")
    op.alter_column("message", "client_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_column("message", "phone")
    op.drop_column("message", "is_test")
