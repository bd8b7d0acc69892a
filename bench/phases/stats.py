"""Phase `stats`: the statistics endpoints over a large kept (or throwaway) database while a
background loop writes status changes through the counter triggers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from bench import profile, stats_db, system
from bench.context import Bench, log
from bench.format import Report, fmt, table
from bench.result import PhaseResult
from tests.support import database


@dataclass(kw_only=True)
class StatsResult(PhaseResult):
    key = "stats"
    database: str
    reused: bool
    seed_seconds: float
    rows: int
    mailings: int
    big_mailing_rows: int
    rows_measured: list[dict[str, Any]] | None = None
    background_writes: dict[str, Any] | None = None
    api_profile: dict[str, Any] | None = None

    def render(self, report: Report) -> None:
        st = self.body()
        if not st.get("rows_measured"):
            return
        rows = []
        for row in st["rows_measured"]:
            path = "/mailings/stats" if row["mode"] == "stats-all" else "/mailings/{id}/stats"
            rows.append(
                [
                    f"GET {path}",
                    row["concurrency"],
                    fmt(row["requests"]),
                    fmt(row["rate"]),
                    fmt(row["p50_ms"]),
                    fmt(row["p95_ms"]),
                    fmt(row["p99_ms"]),
                    fmt(row["api_cpu_ms_per_request"], 2),
                ]
            )
        w = st.get("background_writes", {})
        report.add(
            f"## Statistics ({fmt(st['rows'])} message rows, {fmt(st['mailings'])} mailings)\n\n"
            f"Database `{st['database']}`: "
            + (
                "reused from an earlier run (its description and row count matched)"
                if st.get("reused")
                else f"seeded in this run in {fmt(st.get('seed_seconds'))} s "
                "(`INSERT … SELECT generate_series`, counters filled from one `GROUP BY`)"
            )
            + f". The `{{id}}` is the mailing with {fmt(st['big_mailing_rows'])} messages. A "
            f"real uvicorn API process; meanwhile a background loop flips statuses of random "
            f"100-row batches (half in the big mailing) through the counter triggers, as "
            f"senders would: {fmt(w.get('rows_per_s'))} rows/s in "
            f"{fmt(w.get('batches'))} statements.\n\n"
            + table(
                (
                    "request | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | "
                    "API CPU ms/req"
                ),
                rows,
            )
            + "\n\nThe kept database is dropped with `python -m bench.run --drop-stats-db` (or "
            "`psql -h 127.0.0.1 -U postgres -c 'DROP DATABASE mailing_bench_stats'`)."
        )

    def render_appendix(self, report: Report) -> None:
        api = self.api_profile
        if api:
            report.add(
                f"### api during `GET /mailings/stats` ({fmt(api['samples'])} samples)\n\n"
                "py-spy on the API process while the statistics phase sent its sequential "
                "`GET /mailings/stats` requests.\n\n" + report.profile_tables(api)
            )


async def run(bench: Bench) -> StatsResult:
    rows = bench.args.stats_rows
    layout = stats_db.Layout.of(rows)
    name = bench.args.stats_db or (
        f"mailing_bench_stats_tmp_{bench.run_id.lower()}"
        if bench.args.stats_throwaway
        else stats_db.default_name(rows)
    )
    try:
        info = await asyncio.to_thread(stats_db.ensure, name, layout, lambda m: log(m))
    except BaseException:
        if bench.args.stats_throwaway:
            stats_db.drop(name)
        raise
    out = bench.keep(
        StatsResult.from_body(
            info | {"rows": rows, "mailings": layout.mailings, "big_mailing_rows": layout.big}
        )
    )
    log(f"  stats db {name}: {'reused' if info['reused'] else 'seeded'} ({rows:,} rows)")
    dep = await bench.deploy(
        bench.deployment("stats", with_scheduler=False, senders=0, database_name=name)
    )
    assert dep.api is not None
    writer_stop = asyncio.Event()
    writes = {"batches": 0, "rows": 0}
    writer = asyncio.create_task(status_writer(bench, name, layout, writer_stop, writes))
    profiled = not bench.args.no_profile and profile.available()
    try:
        await asyncio.sleep(0.5)
        started = time.monotonic()
        measurements = []
        for mode, concurrency in (("stats-all", 1), ("stats-one", 1), ("stats-all", 4)):
            before = system.cpu_seconds(dep.api.pid)
            recorder = None
            if mode == "stats-all" and concurrency == 1 and profiled:
                recorder = profile.Recorder(dep.api.pid, bench.run_dir / "profile-api-stats.txt")
                await asyncio.sleep(0.5)
            result = await bench.apiload(
                dep.api.url,
                mode,
                concurrency=concurrency,
                count=bench.args.stats_requests,
                max_id=1,
            )
            result["api_cpu_ms_per_request"] = round(
                (system.cpu_seconds(dep.api.pid) - before) * 1000 / result["requests"], 2
            )
            if recorder is not None:
                path = recorder.stop()
                if path is not None:
                    out.api_profile = profile.summarize(path)
            measurements.append(result)
            log(
                f"  stats {mode} x{concurrency}: p50 {result['p50_ms']} ms, "
                f"p95 {result['p95_ms']} ms"
            )
        elapsed = time.monotonic() - started
    finally:
        writer_stop.set()
        with contextlib.suppress(Exception):
            await writer
        await bench.undeploy(dep)
        if bench.args.stats_throwaway:
            stats_db.drop(name)
    out.rows_measured = measurements
    out.background_writes = {
        "batches": writes["batches"],
        "rows": writes["rows"],
        "rows_per_s": round(writes["rows"] / elapsed, 1) if elapsed else None,
    }
    return out


async def status_writer(
    bench: Bench, name: str, layout: stats_db.Layout, stop: asyncio.Event, writes: dict[str, int]
) -> None:
    """Simulated senders: flip sent/failed on random 100-row batches, paced, with the
    counter triggers doing their work as in production (half of them in the big mailing)."""

    interval = 100 / bench.args.stats_write_rate
    async with await psycopg.AsyncConnection.connect(
        database._server_dsn(name), autocommit=True
    ) as conn:
        next_at = time.monotonic()
        while not stop.is_set():
            if random.random() < 0.5:
                low = random.randint(1, max(layout.big - 100, 1))
            else:
                low = random.randint(layout.big + 1, max(layout.rows - 100, layout.big + 1))
            cursor = await conn.execute(
                """
                UPDATE message SET status = CASE WHEN status = 'sent' THEN 'failed'
                                                 ELSE 'sent' END,
                                   updated_at = now()
                WHERE id BETWEEN %s AND %s AND status IN ('sent', 'failed')
                """,
                [low, low + 99],
            )
            writes["batches"] += 1
            writes["rows"] += cursor.rowcount
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                next_at = time.monotonic()
