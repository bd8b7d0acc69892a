"""Phase `fanout`: a big mailing's fan-out (message rows per second, first delivery, send rate
while it goes on, scheduler memory), small mailings created meanwhile, the cancel, and one
fan-out chunk under EXPLAIN ANALYZE."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika

from bench import system
from bench.context import AMQP_URL, Bench, count_at, log, r
from bench.deploy import Deployment
from bench.format import Report, fmt, ratio, table
from bench.result import PhaseResult


@dataclass(kw_only=True)
class FanoutResult(PhaseResult):
    key = "fanout"
    clients: int
    step_clients: int
    seed_s: float
    tiny_clients: int
    step: dict[str, Any] | None = None
    full: dict[str, Any] | None = None
    chunk_profile: dict[str, Any] | None = None

    def render(self, report: Report) -> None:
        fo = self.body()
        step, full = fo.get("step") or {}, fo.get("full") or {}

        def both(key: str, digits: int = 1, unit: str = "") -> list[str]:
            return [fmt(step.get(key), digits) + unit, fmt(full.get(key), digits) + unit]

        def rss(x: dict[str, Any]) -> str:
            start, peak = x.get("scheduler_rss_start_mb"), x.get("scheduler_peak_rss_mb")
            return f"{fmt(start)} → {fmt(peak)} MB"

        rows = [
            ["matching clients", *both("messages")],
            ["message rows created in (fanout_done_at - started_at)", *both("fanout_s", 2, " s")],
            ["fan-out done after the create request", *both("fanout_done_after_create_s", 2, " s")],
            ["create request → first delivery", *both("first_delivery_s", 2, " s")],
            [
                "window measured (watched until)",
                f"{fmt(step.get('window_s'))} s",
                f"{fmt(full.get('window_s'))} s ({fmt(full.get('watched_s'))} s)",
            ],
            ["message rows at the window's end", *both("rows_at_window_end")],
            ["sent in the window", *both("sent_in_window")],
            ["send rate over the window (msg/s)", *both("first_window_rate")],
            ["send queue peak depth", *both("queue_peak")],
            ["scheduler RSS at start → peak", rss(step), rss(full)],
            ["DELETE (cancel) request", *both("delete_request_ms", 1, " ms")],
            [
                "deliveries within 2 s after the DELETE returned",
                *both("delivered_within_2s_after_delete"),
            ],
        ]
        base = report.run("0ms-warning")
        text = (
            f"## Fan-out ({fmt(fo['clients'])} matching clients)\n\n"
            f"{fmt(fo['clients'])} clients bulk-seeded ({fmt(fo.get('seed_s'))} s). A mailing to "
            f"the first {fmt(fo['step_clients'])} (a fresh scheduler, until its fan-out is done "
            "plus 3 s), then one to all of them (another fresh scheduler, measured for the "
            "first minute, then deleted). Stub at 0 ms, the run's settings, one sender.\n\n"
            + table(
                ["", f"{fmt(fo['step_clients'])} clients", f"{fmt(fo['clients'])} clients"], rows
            )
        )
        if base and full.get("first_window_rate"):
            text += (
                f"\n\nFirst-window send rate over the `0ms-warning` run's rate "
                f"({fmt(base['rate'])} msg/s): "
                f"**{ratio(full['first_window_rate'], base['rate'])}x**."
            )
        chunk = fo.get("chunk_profile")
        if chunk and chunk.get("execution_ms"):
            trig = chunk.get("triggers_ms", {})
            fk = sum(v for k, v in trig.items() if k.startswith("fk_"))
            counters = sum(v for k, v in trig.items() if not k.startswith("fk_"))
            total_ms = chunk["execution_ms"]
            rest = total_ms - fk - counters
            rate = chunk["clients"] / total_ms * 1000
            text += (
                f"\n\nOne fan-out chunk ({fmt(chunk['clients'])} clients, the scheduler's "
                "`INSERT … SELECT`) under `EXPLAIN ANALYZE` on the quiet pipeline after the run, "
                f"rolled back: **{fmt(total_ms, 0)} ms** ({fmt(rate, 0)} rows/s) — "
                + (
                    f"the foreign-key checks {fmt(fk, 0)} ms, "
                    if fk
                    else "no foreign-key triggers (dropped in migration 0002: 44% of a chunk "
                    "before), "
                )
                + f"the counter trigger {fmt(counters, 0)} ms, picking the clients and "
                f"inserting the rows with their 6 indexes {fmt(rest, 0)} ms."
            )
        tiny = full.get("tiny", {})
        if tiny:
            rows = [
                [
                    k.replace("_", " "),
                    fmt(v["created_at_s"]) + " s",
                    fmt(v["seconds"], 2) + " s",
                    fmt(v["completed"]),
                    fmt(v["sent"]),
                ]
                for k, v in tiny.items()
            ]
            text += (
                "\n\n100-client mailings created while the big one runs (time from their "
                "`created_at` to `completed_at`, database clock):\n\n"
                + table(
                    "created | after the big one's create | to completed | completed | sent",
                    rows,
                )
            )
        report.add(text)


async def run(bench: Bench) -> FanoutResult:
    assert bench.stub_ctl is not None
    total = bench.args.fanout_clients
    step = max(total // 10, 1)
    tiny = 100
    await bench.reset_messages(clients=True)
    seed_s = await bench.seed_clients(total, tagged=step, tag="fanout-step")
    await bench.seed_clients(tiny, phone_prefix="76", operator="901", tag="tiny")
    out = bench.keep(
        FanoutResult(clients=total, step_clients=step, seed_s=round(seed_s, 1), tiny_clients=tiny)
    )
    # Step 1: a tenth of the clients, a fresh scheduler: its peak RSS. Step 2: every client,
    # another fresh scheduler (same api and sender), the first minute, then cancelled.
    await bench.stub_ctl.reset(0)
    dep = await bench.deploy(bench.deployment("fanout"))
    try:
        out.step = first = await watch_big_mailing(
            bench, dep, step, {"tags": ["fanout-step"]}, seconds=None, tiny=None
        )
        log(
            f"  fan-out {step:,}: rows in {first['fanout_s']}s, scheduler peak RSS "
            f"{first['scheduler_peak_rss_mb']} MB"
        )
        await dep.stop_scheduler()
        await bench.purge_send_queue(dep)
        await asyncio.sleep(1.0)  # the sender drops the jobs it prefetched
        await bench.reset_messages()
        await dep.restart_scheduler()
        await bench.stub_ctl.reset(0)
        out.full = await watch_big_mailing(
            bench,
            dep,
            total,
            {"operator_codes": ["900"]},
            seconds=bench.args.fanout_seconds,
            tiny=tiny,
        )
    finally:
        await bench.undeploy(dep)
    out.chunk_profile = await explain_fanout_chunk(bench)
    full = out.full
    assert full is not None
    log(
        f"  fan-out {total:,}: rows in {full['fanout_s']}s, first send "
        f"{full['first_delivery_s']}s, {full['first_window_rate']}/s over the first "
        f"{full['window_s']}s, peak queue {full['queue_peak']}, scheduler peak RSS "
        f"{full['scheduler_peak_rss_mb']} MB"
    )
    return out


async def watch_big_mailing(
    bench: Bench,
    dep: Deployment,
    expected: int,
    mailing_filter: dict[str, list[str]],
    *,
    seconds: float | None,
    tiny: int | None,
) -> dict[str, Any]:
    """Create a big mailing and watch it: fan-out, first send, rate, queue depth, RSS.

    With `seconds=None` it runs until the fan-out is done plus a few seconds of sending;
    otherwise for `seconds`. With `tiny`, a 100-client mailing is created during the
    fan-out and another once it is done, each timed until it is `completed`. Then the big
    mailing is deleted (cancelled) and the deletion timed.
    """
    assert dep.scheduler is not None and bench.stub_ctl is not None
    scheduler_pid = dep.scheduler.pid
    peak = {"rss": system.rss_mb(scheduler_pid), "queue": 0}
    rss_series: list[tuple[float, float]] = []
    stop = asyncio.Event()
    t0 = time.time()

    async def poll_rss() -> None:
        while not stop.is_set():
            rss = system.rss_mb(scheduler_pid)
            peak["rss"] = max(peak["rss"], rss)
            rss_series.append((time.time() - t0, rss))
            await asyncio.sleep(0.1)

    async def poll_queue() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            while not stop.is_set():
                declared = await channel.declare_queue(f"{dep.namespace}.send", passive=True)
                depth = int(declared.declaration_result.message_count or 0)
                peak["queue"] = max(peak["queue"], depth)
                await asyncio.sleep(0.25)

    pollers = [asyncio.create_task(poll_rss()), asyncio.create_task(poll_queue())]
    tiny_results: dict[str, Any] = {}
    tiny_tasks: list[asyncio.Task[None]] = []

    async def tiny_mailing(label: str) -> None:
        async with dep.api_client() as api:
            started = time.time()
            response = await api.post("/mailings", json=bench.mailing_body(operator_codes=["901"]))
            response.raise_for_status()
            mailing_id = int(response.json()["id"])
            deadline = started + bench.args.tiny_timeout
            while time.time() < deadline:
                row = await bench.mailing_row(mailing_id)
                if row["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
            waited = time.time() - started
            row = await bench.mailing_row(mailing_id)
            counts = await bench.counts(mailing_id)
            tiny_results[label] = {
                "created_at_s": round(started - t0, 2),
                "completed": row["status"] == "completed",
                "seconds": round(row["created_to_completed_s"], 2)
                if row["created_to_completed_s"] is not None
                else None,
                "waited_s": round(waited, 2),
                "sent": counts.get("sent", 0),
            }

    async with dep.api_client() as api:
        t0 = time.time()
        response = await api.post("/mailings", json=bench.mailing_body(**mailing_filter))
    response.raise_for_status()
    mailing_id = int(response.json()["id"])
    series: list[tuple[float, int]] = []
    fanout_done_at: float | None = None
    rows_at_window_end: int | None = None
    end_at = None if seconds is None else t0 + seconds
    try:
        if tiny is not None:
            tiny_tasks.append(
                asyncio.create_task(_after(bench.args.tiny_during_s, tiny_mailing, "during_fanout"))
            )
        while True:
            now = time.time()
            counts = await bench.counts(mailing_id)
            series.append((now - t0, counts.get("sent", 0)))
            if fanout_done_at is None:
                row = await bench.mailing_row(mailing_id)
                if row["fanout_done_at"] is not None:
                    fanout_done_at = now
            # The second small mailing once the fan-out is done: only the send queue is
            # ahead of it then.
            if tiny is not None and len(tiny_tasks) == 1 and fanout_done_at:
                tiny_tasks.append(asyncio.create_task(_after(1.0, tiny_mailing, "after_fanout")))
            if end_at is not None and rows_at_window_end is None and now >= end_at:
                rows_at_window_end = sum(counts.values())
            if now - t0 > bench.args.fanout_timeout:
                break
            if end_at is None:
                if fanout_done_at is not None and now - fanout_done_at >= bench.args.step_tail_s:
                    break
            elif now >= end_at and fanout_done_at is not None:
                # The window is over; the fan-out's end and the small mailings are timed
                # to the end (a small one is given up after --tiny-timeout).
                if len(tiny_tasks) >= (2 if tiny is not None else 0) and all(
                    t.done() for t in tiny_tasks
                ):
                    break
            await asyncio.sleep(0.1)
        if rows_at_window_end is None:
            rows_at_window_end = sum((await bench.counts(mailing_id)).values())
        watched_s = time.time() - t0
        window = watched_s if seconds is None else seconds
        sent_in_window = count_at(series, window)
        stub_before_delete = await bench.stub_ctl.stats()
        async with dep.api_client() as api:
            started = time.time()
            response = await api.delete(f"/mailings/{mailing_id}")
            delete_s = time.time() - started
        response.raise_for_status()
        await asyncio.sleep(2.0)
        stub_after = await bench.stub_ctl.stats()
    finally:
        stop.set()
        for task in pollers + tiny_tasks:
            task.cancel()
        await asyncio.gather(*pollers, *tiny_tasks, return_exceptions=True)
    row = await bench.mailing_row(mailing_id)
    first = stub_before_delete.get("first_received_at")
    delivered_after_delete = (stub_after.get("by_outcome", {}).get("ok", 0)) - (
        stub_before_delete.get("by_outcome", {}).get("ok", 0)
    )
    return {
        "mailing_id": mailing_id,
        "messages": expected,
        "fanout_s": r(row["fanout_s"], 2),
        "fanout_done_after_create_s": r(fanout_done_at - t0, 2) if fanout_done_at else None,
        "first_delivery_s": round(first - t0, 3) if first else None,
        "window_s": round(window, 1),
        "watched_s": round(watched_s, 1),
        "rows_at_window_end": rows_at_window_end,
        "fanout_rows_per_s": round(rows_at_window_end / window, 0)
        if rows_at_window_end and window
        else None,
        "sent_in_window": sent_in_window,
        "first_window_rate": round(sent_in_window / window, 1) if window else None,
        "queue_peak": peak["queue"],
        "scheduler_peak_rss_mb": round(peak["rss"], 1),
        "scheduler_rss_start_mb": round(rss_series[0][1], 1) if rss_series else None,
        "delete_request_ms": round(delete_s * 1000, 1),
        "delivered_within_2s_after_delete": delivered_after_delete,
        "tiny": tiny_results,
        "load": [round(x, 2) for x in system.load_average()],
    }


async def explain_fanout_chunk(bench: Bench) -> dict[str, Any]:
    """One fan-out chunk as the scheduler runs it, under EXPLAIN ANALYZE, rolled back:
    where its time goes (the row inserts and indexes, the foreign-key and counter
    triggers)."""
    from services.scheduler.fanout import insert_chunk

    chunk = int(bench.scheduler_env.get("FANOUT_CHUNK_SIZE", "20000"))
    query = re.sub(
        r"(?<!:):(\w+)", r"%(\1)s", str(insert_chunk(by_operator_code=False, by_tag=False))
    )
    assert bench.pg is not None
    async with bench.pg.transaction(force_rollback=True):
        rows = await bench.sql(
            """
            INSERT INTO mailing (start_at, end_at, text, status, started_at)
            VALUES (now(), now() + interval '1 hour', 'explain', 'running', now())
            RETURNING id
            """
        )
        plan = await bench.sql(
            "EXPLAIN (ANALYZE, BUFFERS) " + query,
            {
                "mailing_id": rows[0][0],
                "cursor": 0,
                "high": 10**12,
                "limit": chunk,
                "ws": None,
                "we": None,
            },
        )
    lines = [line for (line,) in plan]
    counted = await bench.sql(
        "SELECT count(*) FROM client WHERE id <= %s AND deleted_at IS NULL", [chunk]
    )
    chunk = int(counted[0][0])
    triggers = {}
    for line in lines:
        match = re.search(r"Trigger (?:for constraint )?(\S+): time=([\d.]+) calls=(\d+)", line)
        if match:
            triggers[match[1]] = float(match[2])
    total = next(
        (float(m[1]) for line in lines if (m := re.search(r"Execution Time: ([\d.]+)", line))),
        None,
    )
    return {"clients": chunk, "execution_ms": total, "triggers_ms": triggers}


async def _after(delay: float, fn: Callable[[str], Awaitable[None]], label: str) -> None:
    await asyncio.sleep(delay)
    await fn(label)
