"""message partitioned by mailing id, so retention drops old messages by whole partitions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:00:00.000000

`message` becomes a table partitioned by RANGE (mailing_id): every message of one mailing is
in one partition, so `(mailing_id, client_id)` stays unique (the fan-out's ON CONFLICT) and the
scheduler's retention detaches and drops a partition once all its mailings finished long ago
(docs/RETENTION.md). The primary key becomes `(id, mailing_id)`: a partitioned table's unique
keys must hold the partition key; ids still come from one identity sequence, so an id alone
still names one message (the provider's msgId).

The existing table is not copied: it becomes the first partition, `message_legacy`, covering
every mailing id below a bound a little above today's highest. Before the switch, with the
service running (no statement here blocks reads or writes for long):

1. a CHECK constraint `mailing_id < bound` is added NOT VALID (instant) and validated
   (a scan that takes only a SHARE UPDATE EXCLUSIVE lock: reads and writes go on), so the
   attach below needs no scan of its own;
2. 0006's `ck_message_test_or_client` is validated the same way (a partition must not have a
   NOT VALID constraint the parent has);
3. the new key's index `(id, mailing_id)` is built CONCURRENTLY.

Then one short transaction takes the table's ACCESS EXCLUSIVE lock (waiting at most
`lock_timeout`, see LOCK_TIMEOUT; rerun the upgrade if it gave up: every step above is
redone or kept), renames the table, swaps its key, creates the partitioned `message` with the
same columns and indexes, attaches the old table (its indexes are adopted, none is built),
moves the statement-level counter triggers (`message_count_*`, `message_minute_update`) onto
the partitioned table, where transition tables hold the rows of every partition, and creates:

- `message_partition_ensure(mailing_id)`: the partition of a mailing's block of
  PARTITION_MAILINGS ids, created (CREATE TABLE + ATTACH PARTITION, which locks `message` in
  SHARE UPDATE EXCLUSIVE mode only: reads and writes go on) when it is missing;
- a trigger on `mailing` that calls it for every new mailing, so a message row for any
  existing mailing always has a partition (the scheduler also calls it at activation and
  ahead of the newest mailing; the trigger gives up quietly on a lock timeout and leaves it
  to them).

Downgrade: the partitions are detached and folded back into one plain table (the largest
keeps its rows, the others are copied into it), with the old key `(id)`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Mailings per partition: mailing ids [k * N + 1, (k + 1) * N + 1) share one partition
# (docs/RETENTION.md explains the choice: queries without a mailing id visit every partition).
PARTITION_MAILINGS = 100
# Mailing ids the old table keeps room for above today's highest: mailings created while the
# CHECK constraint is validated still get their messages into it.
HEADROOM_MAILINGS = 1000
# The switch waits this long at most for the table's lock (running statements end first).
LOCK_TIMEOUT = "10s"
LEGACY = "message_legacy"
log = logging.getLogger("alembic.runtime.migration")
RANGE_CHECK = "message_legacy_range"
LEGACY_KEY = "message_legacy_pkey"

# The indexes of `message` (0001), recreated on the partitioned table under the same names.
INDEXES = {
    "ix_message_mailing_id_status_id": ("(mailing_id, status, id)", None),
    "ix_message_mailing_id_id": ("(mailing_id, id)", None),
    "ix_message_due": ("(mailing_id, not_before)", "status = 'pending'"),
    "ix_message_lease_until": ("(lease_until)", "status IN ('queued', 'sending', 'retrying')"),
    "ix_message_client_id_open": (
        "(client_id)",
        "status IN ('pending', 'queued', 'sending', 'retrying')",
    ),
}

COUNTER_TRIGGERS = [
    """CREATE TRIGGER message_count_insert AFTER INSERT ON message
       REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_count_on_insert()""",
    """CREATE TRIGGER message_count_update AFTER UPDATE ON message
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_count_on_update()""",
    """CREATE TRIGGER message_count_delete AFTER DELETE ON message
       REFERENCING OLD TABLE AS old_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_count_on_delete()""",
    """CREATE TRIGGER message_minute_update AFTER UPDATE ON message
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION message_minute_on_update()""",
]
TRIGGER_NAMES = [
    "message_count_insert",
    "message_count_update",
    "message_count_delete",
    "message_minute_update",
]


def _partition_functions(legacy_bound: int) -> list[str]:
    """The partition look-up and creation, in SQL so every writer (the scheduler, the api's
    mailing insert, a test send) uses the same rule. `legacy_bound`: mailing ids below it are
    in `message_legacy` while it exists."""
    n = PARTITION_MAILINGS
    return [
        # The partition a mailing's messages go to, if it exists and is attached.
        f"""
        CREATE FUNCTION message_partition_of(p_mailing_id bigint) RETURNS regclass
        LANGUAGE sql STABLE AS $$
            SELECT c.oid::regclass FROM pg_class c
            WHERE c.relispartition AND c.oid = coalesce(
                CASE WHEN p_mailing_id < {legacy_bound} THEN to_regclass('{LEGACY}') END,
                to_regclass('message_p' || ((p_mailing_id - 1) / {n} * {n} + 1)))
        $$
        """,  # noqa: S608 (constants)
        # Creates the partition of the mailing's block when missing. ATTACH PARTITION locks
        # `message` in SHARE UPDATE EXCLUSIVE mode (DML goes on) and the new, empty table
        # ACCESS EXCLUSIVE; the advisory lock keeps two creators of one block apart.
        f"""
        CREATE FUNCTION message_partition_ensure(p_mailing_id bigint) RETURNS regclass
        LANGUAGE plpgsql SET lock_timeout = '2s' AS $$
        DECLARE
            low bigint := (p_mailing_id - 1) / {n} * {n} + 1;
            name text := 'message_p' || low;
            found regclass := message_partition_of(p_mailing_id);
        BEGIN
            IF found IS NOT NULL THEN
                RETURN found;
            END IF;
            IF p_mailing_id < 1 THEN
                RAISE EXCEPTION 'mailing id % has no message partition', p_mailing_id;
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('message_partition'));
            found := message_partition_of(p_mailing_id);
            IF found IS NOT NULL THEN
                RETURN found;
            END IF;
            IF to_regclass(name) IS NOT NULL THEN
                -- Detached by retention and about to be dropped: its mailings are long done.
                RAISE EXCEPTION 'message partition % is being dropped by retention', name
                    USING ERRCODE = 'object_in_use';
            END IF;
            EXECUTE format(
                'CREATE TABLE %I (LIKE message INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('ALTER TABLE message ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                           name, low, low + {n});
            RETURN to_regclass(name);
        END $$
        """,
        # Every new mailing gets its partition in its own transaction; a lock timeout (retention
        # detaching a partition meanwhile) leaves it to the scheduler (activation, maintenance).
        """
        CREATE FUNCTION mailing_message_partition() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF message_partition_of(NEW.id) IS NULL THEN
                BEGIN
                    PERFORM message_partition_ensure(NEW.id);
                EXCEPTION WHEN lock_not_available OR object_in_use THEN
                    RAISE WARNING 'no message partition for mailing % yet: %', NEW.id, SQLERRM;
                END;
            END IF;
            RETURN NULL;
        END $$
        """,
        """CREATE TRIGGER mailing_message_partition AFTER INSERT ON mailing
           FOR EACH ROW EXECUTE FUNCTION mailing_message_partition()""",
    ]


PARTITION_FUNCTIONS_DOWN = [
    "DROP TRIGGER mailing_message_partition ON mailing",
    "DROP FUNCTION mailing_message_partition()",
    "DROP FUNCTION message_partition_ensure(bigint)",
    "DROP FUNCTION message_partition_of(bigint)",
]


def _scalar(sql: str, **params: object) -> Any:
    return op.get_bind().execute(sa.text(sql), params).scalar()


def _legacy_bound() -> int:
    """Above today's highest mailing id by HEADROOM_MAILINGS, on the partition grid."""
    highest = int(_scalar("SELECT coalesce(max(id), 0) FROM mailing") or 0)
    sequence = _scalar(
        "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('mailing', 'id')), 0)"
    )
    top = max(highest, int(sequence or 0))
    if top > 0:  # a live service may create mailings meanwhile; a fresh install does not
        top += HEADROOM_MAILINGS
    n = PARTITION_MAILINGS
    return -(-top // n) * n + 1  # the lowest k * n + 1 above `top`


def _prepare_online() -> int:
    """The slow part, outside any transaction and without blocking the service: returns the
    legacy partition's upper bound."""
    bind = op.get_bind()
    existing = _scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :name",
        name=RANGE_CHECK,
    )
    if existing is not None:
        # A previous attempt stopped after validating it: keep it (and its bound).
        match = re.search(r"mailing_id < '?(\d+)", str(existing))
        assert match, existing
        bound = int(match.group(1))
    else:
        bound = _legacy_bound()
        bind.execute(sa.text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
        bind.execute(
            sa.text(
                f"ALTER TABLE message ADD CONSTRAINT {RANGE_CHECK}"
                f" CHECK (mailing_id IS NOT NULL AND mailing_id < {bound}) NOT VALID"
            )
        )
        bind.execute(sa.text("RESET lock_timeout"))
    started = time.monotonic()
    bind.execute(sa.text(f"ALTER TABLE message VALIDATE CONSTRAINT {RANGE_CHECK}"))
    bind.execute(sa.text("ALTER TABLE message VALIDATE CONSTRAINT ck_message_test_or_client"))
    log.info("0007: constraints validated in %.1f s", time.monotonic() - started)
    valid = _scalar(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)",
        name=LEGACY_KEY,
    )
    if valid is False:  # an interrupted CREATE INDEX CONCURRENTLY leaves an invalid index
        bind.execute(sa.text(f"DROP INDEX CONCURRENTLY {LEGACY_KEY}"))
    bind.execute(
        sa.text(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {LEGACY_KEY}"
            " ON message (id, mailing_id)"
        )
    )
    log.info("0007: key index built in %.1f s (mailing ids below %d stay in %s)",
             time.monotonic() - started, bound, LEGACY)  # fmt: skip
    return bound


def _create_partitioned_message() -> None:
    op.create_table(
        "message",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("mailing_id", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "not_before", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'queued', 'sending', 'sent', 'retrying', "
            "'failed', 'expired', 'cancelled')",
            name=op.f("ck_message_status_known"),
        ),
        sa.CheckConstraint(
            "(is_test AND phone IS NOT NULL AND client_id IS NULL) "
            "OR (NOT is_test AND client_id IS NOT NULL)",
            name=op.f("ck_message_test_or_client"),
        ),
        sa.PrimaryKeyConstraint("id", "mailing_id", name=op.f("pk_message")),
        sa.UniqueConstraint("mailing_id", "client_id",
                            name=op.f("uq_message_mailing_id_client_id")),
        postgresql_partition_by="RANGE (mailing_id)",
    )  # fmt: skip
    for name, (columns, where) in INDEXES.items():
        predicate = f" WHERE {where}" if where else ""
        op.execute(f"CREATE INDEX {name} ON message {columns}{predicate}")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        bound = _prepare_online()
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    started = time.monotonic()
    op.execute("LOCK TABLE message IN ACCESS EXCLUSIVE MODE")
    log.info("0007: table lock taken in %.3f s", time.monotonic() - started)
    next_id = int(
        _scalar(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM message_id_seq"
        )
        or 1
    )
    for trigger in TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER {trigger} ON message")
    op.execute(f"ALTER TABLE message RENAME TO {LEGACY}")
    op.execute(f"ALTER TABLE {LEGACY} ALTER COLUMN id DROP IDENTITY")  # drops message_id_seq
    op.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT pk_message")
    op.execute(
        f"ALTER TABLE {LEGACY} ADD CONSTRAINT {LEGACY_KEY} PRIMARY KEY USING INDEX {LEGACY_KEY}"
    )
    op.execute(
        f"ALTER TABLE {LEGACY} RENAME CONSTRAINT uq_message_mailing_id_client_id"
        f" TO {LEGACY}_mailing_id_client_id_key"
    )
    for name in INDEXES:
        op.execute(f"ALTER INDEX {name} RENAME TO {LEGACY}_{name.removeprefix('ix_message_')}")
    _create_partitioned_message()
    op.execute(f"ALTER TABLE message ALTER COLUMN id RESTART WITH {next_id}")
    # The CHECK constraint proves the bound: no scan, and every index above is adopted.
    op.execute(
        f"ALTER TABLE message ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) TO ({bound})"
    )
    op.execute(f"ALTER TABLE {LEGACY} DROP CONSTRAINT {RANGE_CHECK}")
    for statement in COUNTER_TRIGGERS:
        op.execute(statement)
    for statement in _partition_functions(bound):
        op.execute(statement)
    log.info("0007: switched to the partitioned table in %.3f s", time.monotonic() - started)


def _partitions() -> list[tuple[str, int]]:
    """Every partition of `message` and its row count estimate, the largest first."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT c.relname, c.reltuples FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'message'::regclass ORDER BY c.reltuples DESC, c.relname"
        )
    )
    return [(row.relname, int(row.reltuples)) for row in rows]


def _parent_index_names(partition: str) -> list[tuple[str, str]]:
    """(the partition's index, the partitioned table's index it belongs to), for each."""
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT child.relname AS child, parent.relname AS parent"
                " FROM pg_inherits i"
                " JOIN pg_class parent ON parent.oid = i.inhparent"
                " JOIN pg_class child ON child.oid = i.inhrelid"
                " JOIN pg_index ci ON ci.indexrelid = child.oid"
                " WHERE ci.indrelid = to_regclass(:partition)"
                "   AND parent.relkind = 'I'"
            ),
            {"partition": partition},
        )
        .all()
    )
    return [(row.child, row.parent) for row in rows]


def downgrade() -> None:
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute("LOCK TABLE message IN ACCESS EXCLUSIVE MODE")
    for statement in PARTITION_FUNCTIONS_DOWN:
        op.execute(statement)
    next_id = int(
        _scalar(
            "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM message_id_seq"
        )
        or 1
    )
    partitions = _partitions()
    if not partitions:
        op.execute(
            "CREATE TABLE message_flat (LIKE message INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        op.execute("ALTER TABLE message ATTACH PARTITION message_flat DEFAULT")
        partitions = [("message_flat", 0)]
    base = partitions[0][0]
    renames = _parent_index_names(base)
    for statement in TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER {statement} ON message")
    for name, _ in partitions:
        op.execute(f"ALTER TABLE message DETACH PARTITION {name}")
    op.execute("DROP TABLE message")  # drops message_id_seq and the partitioned indexes
    for child, parent in renames:
        op.execute(f'ALTER INDEX "{child}" RENAME TO "{parent}"')
    for name, _ in partitions[1:]:
        op.execute(f"INSERT INTO {base} SELECT * FROM {name}")  # noqa: S608 (catalogue names)
        op.execute(f"DROP TABLE {name}")
    op.execute(f"ALTER TABLE {base} RENAME TO message")
    op.execute("ALTER TABLE message DROP CONSTRAINT pk_message")
    op.execute("ALTER TABLE message ADD CONSTRAINT pk_message PRIMARY KEY (id)")
    op.execute(
        f"ALTER TABLE message ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY"
        f" (RESTART WITH {next_id})"
    )
    for statement in COUNTER_TRIGGERS:
        op.execute(statement)
