"""The report's closing sections: the figures before and after the changes the profile led to,
and what limits each figure now.

"Before" is run 20261122T162556Z (docs/BENCHMARKS.md at commit e1bc7e9): the same benchmark,
machine and tuned settings, before the changes listed in CHANGES. Its figures are copied here
because the shared machine keeps no old runs; every "after" figure comes from this run.
"""

from __future__ import annotations

from typing import Any

BEFORE_RUN = "20261122T162556Z"
BEFORE: dict[str, float] = {
    "e2e_rate": 469.6,
    "e2e_rate_50ms": 359.5,
    "sender_ms": 1.732,
    "scheduler_ms": 0.577,
    "rabbitmq_ms": 0.410,
    "postgres_ms": 0.405,
    "stub_ms": 0.211,
    "provider_client_cpu_ms": 0.977,
    "scaleout": 1.86,
    "fanout_s": 83.46,
    "first_delivery_s": 1.01,
    "first_window_ratio": 0.78,
    "tiny_after_s": 22.76,
    "stats_p95_ms": 29.9,
    "stats_one_p95_ms": 7.0,
    "duration_min": 11.6,
}
# The tiny mailing created during the fan-out had not completed when the run stopped watching.
BEFORE_TINY_DURING = "> 90 s (not completed)"

CHANGES = [
    "**The sender sends with plain aiohttp** (`services/sender/provider.py`): httpx over the "
    "httpx-aiohttp transport cost 0.98 ms of client CPU per request against 0.36 ms for "
    "aiohttp (the in-process comparison of run "
    f"{BEFORE_RUN}); httpx frames were 42% of the sender's profile. Same requests and "
    "semantics: one pooled session, each request's timeout capped at the time left to the "
    "end, every transport error retryable, the same `classify()`.",
    "**One broker job carries up to `MESSAGES_PER_JOB` (50) messages of one mailing** "
    '(`shared/messaging.py`, `{"mailing_id", "items": [[id, token], …]}`): one confirmed '
    "publish, one delivery and one ack per 50 sends instead of per send. The scheduler's "
    "publishing and RabbitMQ's work were 0.58 and 0.41 ms per message, the sender's AMQP "
    "frames 17% of its samples. The fencing `(id, token)` and the claim are unchanged; a job "
    "is acked once every one of its messages is finished; retries go out as jobs per mailing "
    "and delay tier; dead letters fail or expire the messages of a job in one statement.",
    "**The claim budget is handed back per message as its request ends** (`services/sender/"
    "budget.py`), not when the whole batch's results are written, and a micro-batch is at "
    "most half the budget, so the next micro-batch is claimed while the last one is still "
    "sending (with 64 connections, a 100-message batch filled a 128-message budget: one batch "
    "at a time, 690 msg/s at 50 ms latency before this change, about 1,050 after).",
    "**The sender and the scheduler run on uvloop** (the API and the stub already did).",
    "**The sender's provider concurrency starts slow** (`services/sender/limit.py`): 4 requests "
    "at once until the provider answers, one more per answer. Jobs of 50 made every "
    "micro-batch arrive at once, and a provider that was down met a whole batch (200 requests) "
    "before the breaker opened; now it meets a handful.",
    "**Fan-out: round-robin across mailings, by matching rows, small first chunk, no per-row "
    "foreign-key triggers** (`services/scheduler/fanout.py`, migration 0002): see the fan-out "
    "section for the chunk profile.",
    "**The send window holds `SEND_WINDOW_HORIZON_S` (2 s) of the senders' work**, not a "
    "quarter of the lease TTL (30 s), so a new mailing's first jobs wait behind about 2 s of "
    "others' work in the FIFO send queue.",
]


def _f(value: float | None, digits: int = 2) -> str:
    return "?" if value is None else f"{value:,.{digits}f}"


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _x(before: float | None, after: float | None, *, lower_is_better: bool = False) -> str:
    if not before or not after:
        return "-"
    return f"{(before / after if lower_is_better else after / before):.2f}x"


def _group(results: dict[str, Any], process: str, name: str) -> float | None:
    profiles = _get(results, "e2e", "runs", "50ms-warning", "profiles") or {}
    for group, pct in (profiles.get(process) or {}).get("groups", []):
        if group.startswith(name):
            return float(pct)
    return None


def _http_cpu(results: dict[str, Any], client: str) -> float | None:
    for row in _get(results, "http", "rows") or []:
        if row["client"] == client and row.get("loop", "asyncio") == "asyncio":
            return row.get("cpu_ms_per_request")
    return None


def before_after(results: dict[str, Any]) -> str:
    run = _get(results, "e2e", "runs", "0ms-warning") or {}
    run50 = _get(results, "e2e", "runs", "50ms-warning") or {}
    per = run.get("cpu_ms_per_msg") or {}
    fo = results.get("fanout") or {}
    full = fo.get("full") or {}
    tiny = full.get("tiny") or {}
    during, after_fo = tiny.get("during_fanout") or {}, tiny.get("after_fanout") or {}
    stats = results.get("stats") or {}
    base = run.get("rate")
    first_ratio = (
        full["first_window_rate"] / base if base and full.get("first_window_rate") else None
    )
    during_s = (
        f"{_f(during.get('seconds'), 2)} s"
        if during.get("completed")
        else (f"> {_f(during.get('waited_s'), 0)} s (not completed)" if during else "?")
    )

    def stat_p95(key: str) -> float | None:
        for row in stats.get("rows_measured") or []:
            if row.get("mode") == key and row.get("concurrency") == 1:
                return row.get("p95_ms")
        return None

    total_min = results.get("total_seconds", 0) / 60 if results.get("total_seconds") else None
    scale = _get(results, "scaleout", "speedup")
    rows: list[tuple[str, str, str, str]] = [
        (
            "end-to-end msg/s, stub 0 ms",
            _f(BEFORE["e2e_rate"], 1),
            _f(base, 1),
            _x(BEFORE["e2e_rate"], base),
        ),
        (
            "end-to-end msg/s, stub 50 ms",
            _f(BEFORE["e2e_rate_50ms"], 1),
            _f(run50.get("rate"), 1),
            _x(BEFORE["e2e_rate_50ms"], run50.get("rate")),
        ),
    ]
    for key, label in (
        ("sender", "sender"),
        ("scheduler", "scheduler"),
        ("rabbitmq", "RabbitMQ"),
        ("postgres_db", "PostgreSQL"),
        ("stub", "provider stub"),
    ):
        before_key = {"postgres_db": "postgres_ms", "rabbitmq": "rabbitmq_ms"}.get(key, f"{key}_ms")
        rows.append(
            (
                f"CPU ms per message: {label}",
                _f(BEFORE[before_key], 3),
                _f(per.get(key), 3),
                _x(BEFORE[before_key], per.get(key), lower_is_better=True),
            )
        )
    provider_cpu = _http_cpu(results, "provider")
    rows += [
        (
            "ProviderClient CPU ms per request (in-process, 64 at once)",
            _f(BEFORE["provider_client_cpu_ms"], 3),
            _f(provider_cpu, 3),
            _x(BEFORE["provider_client_cpu_ms"], provider_cpu, lower_is_better=True),
        ),
        ("scale-out, 2 senders vs 1", f"{BEFORE['scaleout']:.2f}x", f"{_f(scale)}x", "-"),
        (
            "fan-out: 1,000,000 message rows in",
            f"{_f(BEFORE['fanout_s'], 1)} s",
            f"{_f(full.get('fanout_s'), 1)} s",
            _x(BEFORE["fanout_s"], full.get("fanout_s"), lower_is_better=True),
        ),
        (
            "fan-out: create → first delivery",
            f"{_f(BEFORE['first_delivery_s'])} s",
            f"{_f(full.get('first_delivery_s'))} s",
            "-",
        ),
        (
            "fan-out: first-window send rate vs end to end",
            f"{BEFORE['first_window_ratio']:.2f}x",
            f"{_f(first_ratio)}x",
            "-",
        ),
        ("100-client mailing during the 1M fan-out", BEFORE_TINY_DURING, during_s, "-"),
        (
            "100-client mailing after the 1M fan-out",
            f"{_f(BEFORE['tiny_after_s'])} s",
            f"{_f(after_fo.get('seconds'))} s",
            _x(BEFORE["tiny_after_s"], after_fo.get("seconds"), lower_is_better=True),
        ),
        (
            "GET /mailings/stats p95",
            f"{_f(BEFORE['stats_p95_ms'], 1)} ms",
            f"{_f(stat_p95('stats-all'), 1)} ms",
            "-",
        ),
        (
            "`make bench` duration",
            f"{_f(BEFORE['duration_min'], 1)} min",
            f"{_f(total_min, 1)} min",
            "-",
        ),
    ]
    lines = [
        f"## Before and after\n\nRun {BEFORE_RUN} (the report at commit e1bc7e9, same "
        "benchmark and tuned settings, a similarly loaded machine) against this run. What "
        "changed in between, each change led by that run's profile or figures:\n",
        *[f"{i}. {text}" for i, text in enumerate(CHANGES, 1)],
        "",
        "| figure | before | after | gain |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    return "\n".join(lines) + "\n"


def limits(results: dict[str, Any]) -> str:
    run = _get(results, "e2e", "runs", "0ms-warning") or {}
    per = run.get("cpu_ms_per_msg") or {}
    cpu = run.get("cpu_s") or {}
    rate = run.get("rate")
    sender_ms = per.get("sender")
    nproc = _get(results, "machine", "nproc") or 2
    if not sender_ms or not rate:
        return ""
    total = sum(
        per.get(k) or 0 for k in ("sender", "scheduler", "rabbitmq", "postgres_db", "stub", "api")
    )
    sender_core = cpu["sender"] / cpu["wall"] if cpu.get("wall") and cpu.get("sender") else None
    busy = run.get("machine_busy")
    aio = _http_cpu(results, "provider")
    text = [
        "## What limits it now\n",
        f"**End to end.** Per delivered message the pipeline spends {_f(total)} ms of CPU "
        f"(sender {_f(sender_ms)}, PostgreSQL {_f(per.get('postgres_db'))}, stub "
        f"{_f(per.get('stub'))}, scheduler {_f(per.get('scheduler'))}, RabbitMQ "
        f"{_f(per.get('rabbitmq'))}): {nproc} cores carry at most ≈"
        f"{_f(nproc * 1000 / total, 0)} msg/s with everything on them; this run reached "
        f"{_f(rate, 0)} msg/s with the machine {_f((busy or 0) * 100, 0)}% busy. One sender "
        f"process on one core tops out near {_f(1000 / sender_ms, 0)} msg/s (it was "
        f"{_f((sender_core or 0) * 100, 0)}% of a core busy); past that, add sender replicas "
        "(the scale-out figure) — on this 2-core machine they would only share the same cores.",
    ]
    if aio:
        text.append(
            f"Of the sender's {_f(sender_ms)} ms, about {_f(aio)} ms is the HTTP request itself "
            "(the ProviderClient's cost per request, libcurl, in the HTTP table); the rest is the "
            "claim and "
            "result statements, job decoding, the breaker and budget bookkeeping and the event "
            "loop. The profile tables above show where."
        )
    text.append(
        "\n**Next, by expected gain:** (1) PostgreSQL's share: a delivery writes the wide "
        "message row three times (the lease, the claim, the result), and the counter trigger "
        "runs per statement — merging the `sending` state into the claim's lease (one row "
        "update less per message) could cut about a third of it; (2) the sender's session per "
        "statement (a pool checkout with its pre-ping round trip, then a commit) around the two "
        "statements that now run on psycopg directly "
        f"({_f(_group(results, 'sender', 'DB: SQLAlchemy'), 0)}% of the sender's samples are "
        "still SQLAlchemy); (3) more cores: the pipeline scales out (senders and schedulers "
        "are stateless and coordinate only through PostgreSQL and the broker)."
    )
    return "\n".join(text) + "\n"


def levers(results: dict[str, Any]) -> str:
    """Issue 13's "more sends per core": each lever tried, with its figures from this run."""
    runs = _get(results, "e2e", "runs") or {}
    now, before = runs.get("0ms-warning") or {}, runs.get("0ms-baseline") or {}
    pn, pb = now.get("cpu_ms_per_msg") or {}, before.get("cpu_ms_per_msg") or {}
    short = results.get("short") or {}
    aio, curl = _http_cpu(results, "aiohttp"), _http_cpu(results, "provider")
    lines = [
        "## More sends per core: the levers tried\n",
        "Each measured in this run; `*-baseline` is the code before "
        f"(`--baseline {_get(results, 'args', 'baseline') or '-'}`), the same settings.\n",
        "1. **HTTP client: libcurl's multi interface (pycurl) instead of aiohttp** "
        "(`services/sender/curl.py`). In-process, 64 at once, same stub: the ProviderClient "
        f"costs {_f(curl, 3)} ms of CPU per request, plain aiohttp {_f(aio, 3)} (the HTTP "
        "table). Kept. pyreqwest was as fast but needs `os._exit` to leave without aborting "
        "(its tokio runtime); rnet was slower than aiohttp.",
        "2. **The claim and the result write on psycopg directly** (`services/sender/store.py`"
        "), in the session's transaction. Kept; its share is inside the sender's figure: "
        f"sender {_f(pb.get('sender'), 3)} → {_f(pn.get('sender'), 3)} ms per message with "
        "(1) and (2) together, 0 ms stub.",
        "3. **The lease cap starts at 2,000** (never more than 20 msg/s drain within the lease "
        "TTL) instead of its 200 minimum (`services/scheduler/service.py`): short mailing "
        f"{_f(short.get('baseline_median_s'))} s with the code before, "
        f"{_f(short.get('median_s'))} s (median) with this code, (1) and (2) included (the "
        "short-mailing table). Kept.",
        "4. **Not done in this round:** fewer writes of the wide message row per delivery "
        "(the claim could take over the lease's `queued` write) and a fillfactor for HOT "
        "updates; the connection slow start (4, then one more per answer, doubling per round "
        "trip: 6 round trips to 256 at 20 ms, not what holds a short mailing back) is "
        "unchanged, as the outage test's bound on requests to a dead provider depends on it.",
        f"\nCPU per message outside the stub, 0 ms stub: {_f(_sum(pb), 3)} ms before, "
        f"{_f(_sum(pn), 3)} ms after (PostgreSQL {_f(pb.get('postgres_db'), 3)} → "
        f"{_f(pn.get('postgres_db'), 3)}, scheduler {_f(pb.get('scheduler'), 3)} → "
        f"{_f(pn.get('scheduler'), 3)}).",
    ]
    return "\n".join(lines) + "\n"


def _sum(per: dict[str, Any]) -> float | None:
    parts = [per.get(k) for k in ("sender", "scheduler", "postgres_db", "rabbitmq", "api")]
    return None if any(p is None for p in parts) else float(sum(parts))  # type: ignore[arg-type]


def findings(results: dict[str, Any]) -> str:
    return levers(results) + "\n" + before_after(results) + "\n" + limits(results)
