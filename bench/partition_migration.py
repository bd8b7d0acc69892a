"""Migration 0007 on a large `message` table, with writers running through it.

    python -m bench.partition_migration --rows 10000000

Builds a throwaway database at 0006 with `--rows` messages (1,000 mailings, counters filled),
then runs `alembic upgrade 0007` while a writer keeps doing what the sender does (a result
write of 100 messages by id, then a claim-like read, in a loop, with prepared statements) and
reports how long each step of the migration took, the writer's slowest statement and whether
any of its statements failed. The numbers go into docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time

import psycopg

from tests.support import database

MAILINGS = 1000


def populate(name: str, rows: int) -> None:
    per = rows // MAILINGS
    with database.connect(name) as conn:
        conn.execute(
            "INSERT INTO client (phone, operator_code, timezone)"
            " SELECT '7' || lpad(g::text, 10, '0'), '912', 'UTC' FROM generate_series(1, %s) g",
            [per],
        )
        conn.execute(
            "INSERT INTO mailing (start_at, end_at, text, status, started_at, fanout_done_at)"
            " SELECT now() - interval '1 day', now() + interval '1 day', 'x', 'running',"
            " now(), now() FROM generate_series(1, %s)",
            [MAILINGS],
        )
        conn.execute("ALTER TABLE message DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO message (mailing_id, client_id, status, sent_at)"
            " SELECT mg, cl, CASE WHEN cl %% 10 = 0 THEN 'pending' ELSE 'sent' END,"
            " CASE WHEN cl %% 10 = 0 THEN NULL ELSE now() END"
            " FROM generate_series(1, %s) mg, generate_series(1, %s) cl",
            [MAILINGS, per],
        )
        conn.execute("ALTER TABLE message ENABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO message_count (mailing_id, status, count)"
            " SELECT mailing_id, status, count(*) FROM message GROUP BY 1, 2"
        )
        conn.execute("VACUUM ANALYZE message")


class Writer(threading.Thread):
    """The sender's shape of work on one mailing's pending messages, until stopped."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        self.dsn = database._server_dsn(name)
        self.stop = threading.Event()
        self.latencies: list[tuple[float, float]] = []  # (when, seconds)
        self.errors: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=1) as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM message WHERE mailing_id = 7 AND status = 'pending'"
                    " ORDER BY id LIMIT 100"
                )
            ]
            flip = ("pending", "queued")
            i = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    with conn.transaction():
                        conn.execute(
                            "UPDATE message SET status = %s, updated_at = now()"
                            " WHERE id = ANY(%s) RETURNING id, status",
                            [flip[i % 2], ids],
                        ).fetchall()
                        conn.execute(
                            "SELECT m.id, m.status, mg.text FROM message m"
                            " JOIN mailing mg ON mg.id = m.mailing_id WHERE m.id = ANY(%s)",
                            [ids],
                        ).fetchall()
                except Exception as exc:  # counted and reported
                    self.errors.append(repr(exc)[:200])
                self.latencies.append((time.time(), time.perf_counter() - started))
                i += 1
                time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    # The migration logs how long each of its steps took.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    name = database.create_database("mailing_partition_migration")
    try:
        database.migrate(name, "0006")
        t = time.perf_counter()
        populate(name, args.rows)
        print(f"populated {args.rows:,} messages in {time.perf_counter() - t:.0f} s", flush=True)
        with database.connect(name) as conn:
            before = conn.execute("SELECT count(*), sum(count) FROM message_count").fetchone()
        writer = Writer(name)
        writer.start()
        time.sleep(3)
        t0 = time.time()
        database.migrate(name, "0007")
        t1 = time.time()
        time.sleep(3)
        writer.stop.set()
        writer.join()
        during = [s for when, s in writer.latencies if t0 <= when <= t1 + 1]
        outside = [s for when, s in writer.latencies if when < t0]
        with database.connect(name) as conn:
            rows = conn.execute("SELECT count(*) FROM message").fetchone()
            after = conn.execute("SELECT count(*), sum(count) FROM message_count").fetchone()
            parts = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'message'::regclass"
            ).fetchone()
        print(f"migration 0007: {t1 - t0:.1f} s", flush=True)
        print(f"rows after: {rows[0]:,} (expected {args.rows // MAILINGS * MAILINGS:,})")  # type: ignore[index]
        print(f"counters before {before}, after {after}; partitions {parts[0]}")  # type: ignore[index]
        print(
            f"writer: {len(during)} statements during the migration, slowest"
            f" {max(during, default=0) * 1000:.0f} ms, median"
            f" {statistics.median(during) * 1000 if during else 0:.1f} ms; before it median"
            f" {statistics.median(outside) * 1000 if outside else 0:.1f} ms;"
            f" errors {len(writer.errors)} {writer.errors[:3]}"
        )
    finally:
        if not args.keep:
            database.drop_database(name)


if __name__ == "__main__":
    main()
