"""The statistics benchmark's database: `rows` message rows over 1,000 mailings, bulk-seeded.

One mailing holds a tenth of the rows (1,000,000 of 10,000,000), the other 999 share the
rest. Rows are written with `INSERT … SELECT generate_series` under
`session_replication_role = replica` (no per-row foreign-key checks, no counter triggers),
then the per-mailing counters are filled from one `GROUP BY`, so they agree with the rows
exactly as the triggers would have kept them.

The database is kept between runs and reused while its description (a comment on the
database: rows, mailings, seed version, migration head) and its counted rows match. Drop it
with `DROP DATABASE mailing_bench_stats` (psql -h 127.0.0.1 -U postgres) or
`python -m bench.run --drop-stats-db`.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.support import database

SEED_VERSION = 1
MAILINGS = 1000
CHUNK = 500_000

# Status of the g-th row, spread evenly: 85% sent, 5% failed, 3% expired, 2% cancelled, 2%
# pending, 1% each of queued, sending, retrying.
STATUS_OF_G = """
    CASE WHEN mod(g * 7919, 100) < 85 THEN 'sent'
         WHEN mod(g * 7919, 100) < 90 THEN 'failed'
         WHEN mod(g * 7919, 100) < 93 THEN 'expired'
         WHEN mod(g * 7919, 100) < 95 THEN 'cancelled'
         WHEN mod(g * 7919, 100) < 97 THEN 'pending'
         WHEN mod(g * 7919, 100) < 98 THEN 'queued'
         WHEN mod(g * 7919, 100) < 99 THEN 'sending'
         ELSE 'retrying' END
"""


@dataclass(frozen=True)
class Layout:
    rows: int
    mailings: int
    big: int  # rows of mailing 1
    per: int  # rows of each other mailing (the last takes the remainder)

    @classmethod
    def of(cls, rows: int, mailings: int = MAILINGS) -> Layout:
        big = max(rows // 10, 1)
        per = -(-(rows - big) // (mailings - 1))
        return cls(rows, mailings, big, per)

    @property
    def clients(self) -> int:
        return max(self.big, self.rows - self.big - self.per * (self.mailings - 2), self.per)

    def description(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "mailings": self.mailings,
            "seed_version": SEED_VERSION,
            "head": migration_head(),
        }


def migration_head() -> str:
    script = ScriptDirectory.from_config(Config(str(database.ROOT / "alembic.ini")))
    return str(script.get_current_head())


def default_name(rows: int) -> str:
    return "mailing_bench_stats" if rows == 10_000_000 else f"mailing_bench_stats_{rows}"


def _exists(name: str) -> bool:
    with psycopg.connect(database.ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row is not None


def _description(name: str) -> dict[str, Any] | None:
    with psycopg.connect(database.ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [name],
        ).fetchone()
    try:
        return dict(json.loads(row[0])) if row and row[0] else None
    except ValueError:
        return None


def _counted_rows(name: str) -> int:
    with database.connect(name) as conn:
        row = conn.execute("SELECT coalesce(sum(count), 0) FROM message_count").fetchone()
    return int(row[0]) if row else -1


def reusable(name: str, layout: Layout) -> bool:
    if not _exists(name) or _description(name) != layout.description():
        return False
    try:
        return _counted_rows(name) == layout.rows
    except psycopg.Error:
        return False


def _insert_messages(name: str, layout: Layout, low: int, high: int) -> None:
    big, per, last = layout.big, layout.per, layout.mailings
    with database.connect(name) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET synchronous_commit = off")
        conn.execute(
            f"""
            INSERT INTO message (id, mailing_id, client_id, status, token, attempts, sent_at,
                                 not_before, created_at, queued_at, updated_at)
            SELECT g, k.mailing_id,
                   CASE WHEN g <= %(big)s THEN g
                        ELSE g - %(big)s - (k.mailing_id - 2) * %(per)s END,
                   s.status,
                   CASE WHEN s.status IN ('queued', 'sending', 'retrying') THEN g END,
                   CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
                   CASE WHEN s.status = 'sent' THEN now() END,
                   now(), now(), now(), now()
            FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS g
            CROSS JOIN LATERAL (
                SELECT CASE WHEN g <= %(big)s THEN 1
                            ELSE least(2 + (g - %(big)s - 1) / %(per)s, %(last)s) END AS mailing_id
            ) AS k
            CROSS JOIN LATERAL (SELECT {STATUS_OF_G} AS status) AS s
            """,
            {"big": big, "per": per, "last": last, "low": low, "high": high},
        )


def _create_index(name: str, ddl: str) -> None:
    with database.connect(name) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(ddl)


def seed(name: str, layout: Layout, log: Any = print) -> float:
    """Create (or re-create) the database and fill it; returns the seconds it took."""
    started = time.monotonic()
    database.drop_database(name)
    with psycopg.connect(database.ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database.migrate(name)
    with database.connect(name) as conn:
        conn.execute(
            """
            INSERT INTO client (id, phone, operator_code, tag, timezone)
            SELECT g, '77' || lpad(g::text, 9, '0'), '900', '', 'UTC'
            FROM generate_series(1, %s::bigint) AS g
            """,
            [layout.clients],
        )
        conn.execute("SELECT setval(pg_get_serial_sequence('client', 'id'), %s)", [layout.clients])
        # Mailing 1 is the big running one; every tenth other one is running too.
        conn.execute(
            """
            INSERT INTO mailing (id, start_at, end_at, text, status, started_at, fanout_cursor,
                                 fanout_max_client_id, fanout_done_at, completed_at)
            SELECT g, now() - interval '1 day', now() + interval '30 days', 'Stats bench',
                   CASE WHEN g = 1 OR mod(g, 10) = 0 THEN 'running' ELSE 'completed' END,
                   now() - interval '1 day', %(clients)s, %(clients)s, now() - interval '1 day',
                   CASE WHEN g = 1 OR mod(g, 10) = 0 THEN NULL ELSE now() END
            FROM generate_series(1, %(mailings)s) AS g
            """,
            {"clients": layout.clients, "mailings": layout.mailings},
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('mailing', 'id'), %s)", [layout.mailings]
        )
    log(f"  stats db: clients and mailings in {time.monotonic() - started:.1f}s")
    # Secondary indexes are built once after the load (a sort), not row by row; they are put
    # back exactly as the migrations made them.
    with database.connect(name) as conn:
        indexes = conn.execute(
            """
            SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = 'message'::regclass AND NOT x.indisunique AND NOT x.indisprimary
            """
        ).fetchall()
        for index_name, _ in indexes:
            conn.execute(f'DROP INDEX "{index_name}"')
    chunks = [(low, min(low + CHUNK - 1, layout.rows)) for low in range(1, layout.rows + 1, CHUNK)]
    with ThreadPoolExecutor(2) as pool:
        for _ in pool.map(lambda c: _insert_messages(name, layout, *c), chunks):
            pass
    log(f"  stats db: {layout.rows:,} messages in {time.monotonic() - started:.1f}s")
    with ThreadPoolExecutor(2) as pool:
        # `message` is partitioned (migration 0007): its index definitions read `ON ONLY`,
        # which would index the partitioned table alone; built `ON` it, every partition is.
        ddls = [ddl.replace(" ON ONLY ", " ON ", 1) for _, ddl in indexes]
        for _ in pool.map(lambda ddl: _create_index(name, ddl), ddls):
            pass
    log(f"  stats db: {len(indexes)} indexes rebuilt, {time.monotonic() - started:.1f}s")
    with database.connect(name) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('message', 'id'), %s)", [layout.rows])
        conn.execute(
            """
            INSERT INTO message_count_folded (mailing_id, status, count)
            SELECT mailing_id, status, count(*) FROM message GROUP BY mailing_id, status
            """
        )
        conn.execute("ANALYZE")
    with psycopg.connect(database.ADMIN_DSN, autocommit=True) as conn:
        comment = json.dumps(layout.description()).replace("'", "''")
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
    seconds = time.monotonic() - started
    log(f"  stats db: counters and ANALYZE done, {seconds:.1f}s in all")
    return seconds


def ensure(name: str, layout: Layout, log: Any = print) -> dict[str, Any]:
    if reusable(name, layout):
        return {"database": name, "reused": True, "seed_seconds": 0.0}
    return {"database": name, "reused": False, "seed_seconds": round(seed(name, layout, log), 1)}


def drop(name: str) -> None:
    database.drop_database(name)
