"""status counters as append-only deltas: no writer waits on another's counter row

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 22:30:00.000000

The statement-level triggers on `message` upserted the same few `message_count` (and
`message_minute`) rows per mailing, so every status-changing statement of one mailing queued
behind the others' row locks until they committed, and `message_minute`'s join of the
transition tables went quadratic on large statements. Now each statement INSERTs its net
change per (mailing, status) into `message_count_delta` (no conflicts, no row locks), in the
same transaction as the change. `message_count` becomes a view: the folded counts plus the
deltas not yet folded, so it stays exact at every commit. `message_count_fold()` (the
scheduler, about every second) moves deltas into `message_count_folded` and the positive ones
of sent/failed/expired/retrying into `message_minute` (the dashboard's chart lags by one fold).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MINUTE_STATUSES = "('sent', 'failed', 'expired', 'retrying')"

_DELTAS = """
    INSERT INTO message_count_delta (mailing_id, status, delta)
    SELECT mailing_id, status, sum(delta) FROM ({deltas}) AS d
    GROUP BY mailing_id, status
    HAVING sum(delta) <> 0;
"""
_NEW = "SELECT mailing_id, status, 1 AS delta FROM new_rows WHERE NOT is_test"
_OLD = "SELECT mailing_id, status, -1 AS delta FROM old_rows WHERE NOT is_test"

UP = [
    "ALTER TABLE message_count RENAME TO message_count_folded",
    "ALTER TABLE message_count_folded RENAME CONSTRAINT pk_message_count"
    " TO pk_message_count_folded",
    "ALTER TABLE message_count_folded RENAME CONSTRAINT fk_message_count_mailing_id_mailing"
    " TO fk_message_count_folded_mailing_id_mailing",
    # No key and no foreign key: an insert takes no lock on any other row.
    """CREATE TABLE message_count_delta (
        mailing_id bigint NOT NULL,
        status text NOT NULL,
        delta bigint NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX ix_message_count_delta_mailing_id ON message_count_delta (mailing_id)",
    # Quals on mailing_id reach both branches (a grouping column), so one mailing's counts read
    # its folded rows and its few pending deltas by index.
    """CREATE VIEW message_count AS
       SELECT mailing_id, status, sum(count)::bigint AS count FROM (
           SELECT mailing_id, status, count FROM message_count_folded
           UNION ALL
           SELECT mailing_id, status, delta FROM message_count_delta
       ) AS c
       GROUP BY mailing_id, status""",
    f"""
    CREATE OR REPLACE FUNCTION message_count_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_DELTAS.format(deltas=_NEW)} RETURN NULL; END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION message_count_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_DELTAS.format(deltas=_NEW + " UNION ALL " + _OLD)} RETURN NULL; END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION message_count_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_DELTAS.format(deltas=_OLD)} RETURN NULL; END $$
    """,
    "DROP TRIGGER message_minute_update ON message",
    "DROP FUNCTION message_minute_on_update()",
    # One folder at a time (the others return 0 at once); deltas committed after its snapshot
    # wait for the next fold. A statement's net entry into a final status is exact; into
    # `retrying` it is net of the exits in the same statement (no statement does both).
    f"""
    CREATE FUNCTION message_count_fold(p_limit integer DEFAULT 200000) RETURNS bigint
    LANGUAGE plpgsql AS $$
    DECLARE
        folded bigint;
    BEGIN
        IF NOT pg_try_advisory_xact_lock(hashtext('message_count_fold')) THEN
            RETURN 0;
        END IF;
        WITH moved AS (
            DELETE FROM message_count_delta
            WHERE ctid = ANY (ARRAY(SELECT ctid FROM message_count_delta LIMIT p_limit))
            RETURNING mailing_id, status, delta, at
        ), counts AS (
            INSERT INTO message_count_folded AS c (mailing_id, status, count)
            SELECT mailing_id, status, sum(delta) FROM moved
            GROUP BY mailing_id, status HAVING sum(delta) <> 0
            ORDER BY mailing_id, status
            ON CONFLICT (mailing_id, status) DO UPDATE SET count = c.count + EXCLUDED.count
        ), minutes AS (
            INSERT INTO message_minute AS mm (minute, mailing_id, status, count)
            SELECT date_trunc('minute', at), mailing_id, status, sum(delta) FROM moved
            WHERE delta > 0 AND status IN {MINUTE_STATUSES}
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (minute, mailing_id, status) DO UPDATE SET count = mm.count + EXCLUDED.count
        )
        SELECT count(*) INTO folded FROM moved;
        RETURN folded;
    END $$
    """,  # noqa: S608 (constant fragments)
]

_OLD_APPLY = """
    INSERT INTO message_count AS c (mailing_id, status, count)
    SELECT mailing_id, status, sum(delta) FROM ({deltas}) AS d
    GROUP BY mailing_id, status
    HAVING sum(delta) <> 0
    ORDER BY mailing_id, status
    ON CONFLICT (mailing_id, status) DO UPDATE SET count = c.count + EXCLUDED.count;
"""

DOWN = [
    "SELECT message_count_fold(2147483647)",
    "DROP FUNCTION message_count_fold(integer)",
    "DROP VIEW message_count",
    "DROP TABLE message_count_delta",
    "ALTER TABLE message_count_folded RENAME CONSTRAINT pk_message_count_folded"
    " TO pk_message_count",
    "ALTER TABLE message_count_folded RENAME CONSTRAINT"
    " fk_message_count_folded_mailing_id_mailing TO fk_message_count_mailing_id_mailing",
    "ALTER TABLE message_count_folded RENAME TO message_count",
    f"""
    CREATE OR REPLACE FUNCTION message_count_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_OLD_APPLY.format(deltas=_NEW)} RETURN NULL; END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION message_count_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_OLD_APPLY.format(deltas=_NEW + " UNION ALL " + _OLD)} RETURN NULL; END $$
    """,
    f"""
    CREATE OR REPLACE FUNCTION message_count_on_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN {_OLD_APPLY.format(deltas=_OLD)} RETURN NULL; END $$
    """,
    f"""
    CREATE FUNCTION message_minute_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO message_minute AS mm (minute, mailing_id, status, count)
        SELECT date_trunc('minute', now()), n.mailing_id, n.status, count(*)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status <> o.status AND n.status IN {MINUTE_STATUSES} AND NOT n.is_test
        GROUP BY n.mailing_id, n.status
        ORDER BY n.mailing_id, n.status
        ON CONFLICT (minute, mailing_id, status) DO UPDATE SET count = mm.count + EXCLUDED.count;
        RETURN NULL;
    END $$
    """,  # noqa: S608 (constant fragments)
    """CREATE TRIGGER message_minute_update AFTER UPDATE ON message
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_minute_on_update()""",
]


def upgrade() -> None:
    for statement in UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWN:
        op.execute(statement)
