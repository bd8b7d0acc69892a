"""Message retention and partition upkeep (docs/RETENTION.md).

`message` is partitioned by RANGE (mailing_id) (migration 0007), one partition per block of
mailing ids. At start and every RETENTION_INTERVAL_S the scheduler:

1. makes sure every mailing that may still send, and the next mailing to be created, has its
   partition (`message_partition_ensure`; the mailing insert trigger and the activation
   normally did it already);
2. with MESSAGE_RETENTION_DAYS set, drops every partition whose block of mailing ids is used
   up (the mailing id sequence passed it, so no new mailing lands in it) and whose mailings
   all finished longer ago than that (`shared.domain.retention`): DETACH PARTITION
   CONCURRENTLY (no lock that stops reads or writes of `message`), a second look at the
   mailings (one that came back to life meanwhile gets its partition re-attached, nothing
   lost), then DROP TABLE. A DROP fires no delete trigger: `message_count`, the mailing's
   statistics, stays as it was;
3. deletes `message_minute` rows older than two days (the console reads today and the last
   hour);
4. deletes the frequency caps' `client_contact` rows no cap can count any more: sent
   minutes older than the longest window of FREQUENCY_CAP and of the caps of mailings not
   finished (at least `CONTACT_KEEP_MIN`), and rows at 0, in batches of `CONTACT_PRUNE_BATCH`.

Several schedulers: one runs it at a time (a session advisory lock); the others skip.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.domain.frequency_cap import parse_caps
from shared.domain.lifecycle import sql_in
from shared.domain.retention import MESSAGE_MINUTE_KEEP, finished_at_sql, retention_cutoff
from shared.domain.statuses import MAILING_FINAL_STATUSES

log = structlog.get_logger("scheduler.retention")

# pg_try_advisory_lock key: one retention run at a time across scheduler replicas.
LOCK_KEY = 0x6D736752  # "msgR"
# DETACH … CONCURRENTLY waits for the transactions that use `message` (an export may run for
# minutes): it may take this long; interrupted, it is finished (FINALIZE) by the next run.
DETACH_TIMEOUT = "10min"
LOWEST = -(2**63)
HIGHEST = 2**63 - 1

PARTITIONS = text("""
    SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
           i.inhdetachpending AS detaching, greatest(c.reltuples, 0)::bigint AS rows
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'message'::regclass
    ORDER BY c.relname
""")

# Tables retention detached but did not drop (a crash between the two).
LEFTOVERS = text("""
    SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition
      AND c.relname ~ '^message_(legacy|p[0-9]+)$'
""")

# The highest mailing id handed out: a block at or below it receives no new mailing.
HIGHEST_MAILING_ID = text("""
    SELECT greatest(
        coalesce(pg_sequence_last_value(pg_get_serial_sequence('mailing', 'id')), 0),
        coalesce((SELECT max(id) FROM mailing), 0))
""")

# Mailings of a block that keep it: not finished, or finished since the cutoff.
KEEPERS = text(f"""
    SELECT count(*) FROM mailing mg
    WHERE mg.id >= :low AND mg.id < :high
      AND coalesce({finished_at_sql("mg")} >= :cutoff, true)
""")

ENSURE_LIVE = text(f"""
    SELECT count(message_partition_ensure(id)) FROM mailing
    WHERE status NOT IN ({sql_in(sorted(MAILING_FINAL_STATUSES))})
""")
ENSURE_NEXT = text("SELECT message_partition_ensure(CAST(:id AS bigint))")

PRUNE_MINUTES = text("DELETE FROM message_minute WHERE minute < :before")

# Sent messages stay counted at least this long, whatever the caps (one turned on later
# counts what was sent in the last week).
CONTACT_KEEP_MIN = timedelta(days=7)
CONTACT_PRUNE_BATCH = 50_000
OPEN_MAILING_CAPS = text(f"""
    SELECT DISTINCT frequency_cap FROM mailing
    WHERE frequency_cap IS NOT NULL AND deleted_at IS NULL
      AND status NOT IN ({sql_in(MAILING_FINAL_STATUSES)})
""")
PRUNE_CONTACTS = text("""
    DELETE FROM client_contact WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM client_contact
        WHERE count = 0 OR bucket < :before
        LIMIT :batch))
""")

_BOUND = re.compile(r"FROM \((MINVALUE|'?(-?\d+)'?)\) TO \((MAXVALUE|'?(-?\d+)'?)\)")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    low: int  # first mailing id (LOWEST for MINVALUE)
    high: int  # first mailing id above it (HIGHEST for MAXVALUE)
    detaching: bool
    rows: int  # the planner's estimate

    @property
    def bound_sql(self) -> str:
        low = "MINVALUE" if self.low == LOWEST else str(self.low)
        high = "MAXVALUE" if self.high == HIGHEST else str(self.high)
        return f"FOR VALUES FROM ({low}) TO ({high})"


def parse_bound(bound: str) -> tuple[int, int]:
    """`FOR VALUES FROM ('1') TO ('101')` -> (1, 101); MINVALUE/MAXVALUE -> the extremes."""
    match = _BOUND.search(bound)
    if match is None:
        raise ValueError(f"not a range partition bound: {bound!r}")
    low = LOWEST if match.group(1) == "MINVALUE" else int(match.group(2))
    high = HIGHEST if match.group(3) == "MAXVALUE" else int(match.group(4))
    return low, high


@dataclass
class RetentionRun:
    partitions: int = 0
    rows: int = 0
    dropped: list[str] | None = None
    messages_dropped: int = 0
    minute_rows_pruned: int = 0
    contact_rows_pruned: int = 0
    skipped: bool = False  # another scheduler holds the lock


class Retention:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retention_days: float | None,
        frequency_cap: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.retention_days = retention_days
        self.frequency_cap = frequency_cap
        self.clock = clock

    async def run(self) -> RetentionRun:
        """One pass: partitions ensured, old ones dropped, old minute rows deleted."""
        async with self.engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            if not await conn.scalar(text(f"SELECT pg_try_advisory_lock({LOCK_KEY})")):
                return RetentionRun(skipped=True)
            try:
                return await self._run(conn)
            finally:
                await conn.execute(text(f"SELECT pg_advisory_unlock({LOCK_KEY})"))

    async def _run(self, conn: AsyncConnection) -> RetentionRun:
        now = self.clock()
        result = RetentionRun(dropped=[])
        try:
            await self.ensure_partitions(conn)
        except Exception:
            # A lock not free in time (another DDL): the activation and the fan-out ensure too.
            log.warning("making sure of the mailings' partitions failed", exc_info=True)
        if self.retention_days is not None:
            cutoff = retention_cutoff(now, self.retention_days)
            for name in await self._leftovers(conn):
                await self._drop_leftover(conn, name, cutoff, result)
            highest = int(await conn.scalar(HIGHEST_MAILING_ID) or 0)
            for partition in await partitions(conn):
                if partition.high - 1 > highest and not partition.detaching:
                    continue  # new mailings may still land in it
                if partition.detaching or await self._droppable(conn, partition, cutoff):
                    await self._drop(conn, partition, cutoff, result)
        pruned = await conn.execute(PRUNE_MINUTES, {"before": now - MESSAGE_MINUTE_KEEP})
        result.minute_rows_pruned = int(pruned.rowcount or 0)
        result.contact_rows_pruned = await self._prune_contacts(conn, now)
        remaining = await partitions(conn)
        result.partitions = len(remaining)
        result.rows = sum(p.rows for p in remaining)
        metrics.MESSAGE_PARTITIONS.set(result.partitions)
        metrics.MESSAGE_ROWS_ESTIMATED.set(result.rows)
        metrics.RETENTION_MINUTE_ROWS_PRUNED.inc(result.minute_rows_pruned)
        metrics.RETENTION_LAST_RUN.set_to_current_time()
        log.info(
            "retention run",
            retention_days=self.retention_days,
            partitions=result.partitions,
            rows_estimated=result.rows,
            partitions_dropped=len(result.dropped or []),
            messages_dropped=result.messages_dropped,
            minute_rows_pruned=result.minute_rows_pruned,
            contact_rows_pruned=result.contact_rows_pruned,
        )
        return result

    async def _prune_contacts(self, conn: AsyncConnection, now: datetime) -> int:
        """Frequency caps' summary rows no cap counts any more (see the module's step 4)."""
        caps = [self.frequency_cap or ""]
        caps += [row[0] for row in await conn.execute(OPEN_MAILING_CAPS)]
        windows = [rule.window for cap in caps for rule in parse_caps(cap)]
        keep = max([CONTACT_KEEP_MIN, *windows]) + timedelta(minutes=1)
        pruned = 0
        while True:
            batch = await conn.execute(
                PRUNE_CONTACTS, {"before": now - keep, "batch": CONTACT_PRUNE_BATCH}
            )
            pruned += int(batch.rowcount or 0)
            if (batch.rowcount or 0) < CONTACT_PRUNE_BATCH:
                return pruned

    @staticmethod
    async def ensure_partitions(conn: AsyncConnection) -> None:
        """Every mailing that may still send, and the next one, has its partition."""
        await conn.execute(ENSURE_LIVE)
        highest = int(await conn.scalar(HIGHEST_MAILING_ID) or 0)
        await conn.execute(ENSURE_NEXT, {"id": highest + 1})

    @staticmethod
    async def _droppable(conn: AsyncConnection, partition: Partition, cutoff: datetime) -> bool:
        keepers = await conn.scalar(
            KEEPERS, {"low": partition.low, "high": partition.high, "cutoff": cutoff}
        )
        return int(keepers or 0) == 0

    async def _drop(
        self, conn: AsyncConnection, partition: Partition, cutoff: datetime, result: RetentionRun
    ) -> None:
        name = partition.name
        await conn.execute(text(f"SET statement_timeout = '{DETACH_TIMEOUT}'"))
        try:
            # FINALIZE completes a concurrent detach an earlier run left half done.
            how = "FINALIZE" if partition.detaching else "CONCURRENTLY"
            await conn.execute(text(f'ALTER TABLE message DETACH PARTITION "{name}" {how}'))
        finally:
            await conn.execute(text("RESET statement_timeout"))
        # A mailing of the block may have come back to life before the detach (an admin's
        # retry of failed messages): then it goes back, rows and all.
        if not await self._droppable(conn, partition, cutoff):
            bound = partition.bound_sql
            await conn.execute(text(f'ALTER TABLE message ATTACH PARTITION "{name}" {bound}'))
            log.warning("partition kept: one of its mailings is live again", partition=name)
            return
        await self._drop_table(conn, name, result, block=(partition.low, partition.high))

    async def _drop_table(
        self,
        conn: AsyncConnection,
        name: str,
        result: RetentionRun,
        *,
        block: tuple[int, int] | None = None,
    ) -> None:
        rows = int(await conn.scalar(text(f'SELECT count(*) FROM "{name}"')) or 0)
        await conn.execute(text(f'DROP TABLE "{name}"'))
        metrics.RETENTION_PARTITIONS_DROPPED.inc()
        metrics.RETENTION_MESSAGES_DROPPED.inc(rows)
        assert result.dropped is not None
        result.dropped.append(name)
        result.messages_dropped += rows
        log.info(
            "message partition dropped",
            partition=name,
            messages=rows,
            mailing_ids=None if block is None else [max(block[0], 0), block[1] - 1],
            retention_days=self.retention_days,
        )

    @staticmethod
    async def _leftovers(conn: AsyncConnection) -> list[str]:
        return [row.name for row in await conn.execute(LEFTOVERS)]

    async def _drop_leftover(
        self, conn: AsyncConnection, name: str, cutoff: datetime, result: RetentionRun
    ) -> None:
        """A table detached by a run that stopped before its DROP: judged by its own rows."""
        row = (
            await conn.execute(
                text(f'SELECT min(mailing_id) AS low, max(mailing_id) AS high FROM "{name}"')
            )
        ).one()
        if row.low is not None:
            span = Partition(name, int(row.low), int(row.high) + 1, detaching=False, rows=0)
            if not await self._droppable(conn, span, cutoff):
                log.error(
                    "a detached message partition holds messages of live mailings: attach it"
                    " back (ALTER TABLE message ATTACH PARTITION … FOR VALUES FROM … TO …)",
                    partition=name,
                    mailing_ids=[span.low, span.high - 1],
                )
                return
        await self._drop_table(conn, name, result)


async def partitions(conn: AsyncConnection) -> list[Partition]:
    rows = await conn.execute(PARTITIONS)
    found = []
    for row in rows:
        low, high = parse_bound(row.bound)
        found.append(Partition(row.name, low, high, bool(row.detaching), int(row.rows)))
    return found
