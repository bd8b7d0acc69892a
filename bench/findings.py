"""The report's closing section: what limits each figure and what to change, ranked by the
gain this run's own figures predict. Estimates are derived from figures of the same run
(ceilings, micro-benchmarks, profiles); none is a measurement of the changed code."""

from __future__ import annotations

from typing import Any


def _f(value: float | None, digits: int = 2) -> str:
    return "?" if value is None else f"{value:,.{digits}f}"


def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _http_row(results: dict[str, Any], client: str, loop: str = "asyncio") -> dict[str, Any]:
    for row in _get(results, "http", "rows") or []:
        if row["client"] == client and row.get("loop", "asyncio") == loop and "note" not in row:
            return dict(row)
    return {}


def _group(results: dict[str, Any], process: str, name: str) -> float | None:
    profiles = _get(results, "e2e", "runs", "50ms-warning", "profiles") or {}
    for group, pct in (profiles.get(process) or {}).get("groups", []):
        if group.startswith(name):
            return float(pct)
    return None


def findings(results: dict[str, Any]) -> str:
    run = _get(results, "e2e", "runs", "0ms-warning") or {}
    per = run.get("cpu_ms_per_msg") or {}
    cpu = run.get("cpu_s") or {}
    rate = run.get("rate")
    sender_ms = per.get("sender")
    sched_ms = per.get("scheduler")
    rabbit_ms = per.get("rabbitmq")
    pg_ms = per.get("postgres_db")
    sender_core = cpu.get("sender") / cpu["wall"] if cpu.get("wall") else None
    nproc = _get(results, "machine", "nproc") or 2

    parts = ["## Findings and proposed fixes\n"]

    # --- what limits the end-to-end rate --------------------------------------------------
    if sender_ms and rate:
        total = sum(v or 0 for v in (sender_ms, sched_ms, rabbit_ms, pg_ms, per.get("stub")))
        parts.append(
            "**What limits the end-to-end rate.** The sender is one Python process on one core: "
            f"in `0ms-warning` it spent {_f(sender_ms)} ms of CPU per message and was busy "
            f"{_f((sender_core or 0) * 100, 0)}% of one core, so one sender tops out near "
            f"{_f(1000 / sender_ms, 0)} msg/s whatever the knobs (see the sweep). The whole "
            f"pipeline needs {_f(total)} ms of CPU per message (sender, "
            f"scheduler {_f(sched_ms)}, PostgreSQL {_f(pg_ms)}, RabbitMQ {_f(rabbit_ms)}, stub "
            f"{_f(per.get('stub'))}), so {nproc} cores carry at most ≈"
            f"{_f(nproc * 1000 / total, 0)} msg/s even with more senders: 1,500 msg/s on this "
            "machine needs the per-message CPU cut, in the sender first.\n"
        )

    prov, aio = _http_row(results, "provider"), _http_row(results, "aiohttp")
    prov_uv, aio_uv = (
        _http_row(results, "provider", "uvloop"),
        _http_row(results, "aiohttp", "uvloop"),
    )
    http_saving = None
    if prov.get("cpu_ms_per_request") and aio.get("cpu_ms_per_request"):
        http_saving = prov["cpu_ms_per_request"] - aio["cpu_ms_per_request"]
    broker = results.get("broker") or {}
    one_by_one = _get(broker, "consume_ack", "client_cpu_ms_per_msg")
    multiple = _get(broker, "consume_ack_multiple", "client_cpu_ms_per_msg")
    rmq_one = _get(broker, "consume_ack", "broker_cpu_ms_per_msg")
    rmq_multiple = _get(broker, "consume_ack_multiple", "broker_cpu_ms_per_msg")
    publish_ms = _get(broker, "publish_gathered", "client_cpu_ms_per_msg")
    amqp_share = _group(results, "sender", "AMQP")
    log_runs = _get(results, "sweep", "runs") or {}
    info, warn = log_runs.get("LOG_LEVEL=INFO"), log_runs.get("tuned")
    fo = results.get("fanout") or {}
    chunk = fo.get("chunk_profile") or {}
    fk_ms = sum(v for k, v in (chunk.get("triggers_ms") or {}).items() if k.startswith("fk_"))
    full = fo.get("full") or {}

    def after(saving: float | None) -> str:
        if not saving or not sender_ms or saving >= sender_ms:
            return ""
        return (
            f" If the sender stays the bottleneck, {_f(sender_ms)} → {_f(sender_ms - saving)} "
            f"ms/msg is ≈{_f(sender_ms / (sender_ms - saving), 2)}x its rate."
        )

    fixes: list[str] = []
    fixes.append(
        "**Sender: send with plain aiohttp instead of httpx over the httpx-aiohttp transport** "
        "(`services/sender/provider.py`, `ProviderClient`). Keep one `aiohttp.ClientSession("
        "connector=TCPConnector(limit=max_connections), timeout=ClientTimeout(total="
        "timeout_s))` created lazily inside the running loop; in `send()` do `async with "
        "session.post(f'{base}/send/{id}', json=..., headers=...) as r: body = await "
        "r.read()`, keep `asyncio.timeout(timeout)` around it, map `aiohttp.ClientError` and "
        "`TimeoutError` to `RETRY` exactly as the httpx errors are now, and pass `r.status`, "
        "`body` and `r.headers.get('retry-after')` to the unchanged `classify()`; `close()` "
        "closes the session. Same requests, same semantics. Expected: "
        + (
            f"{_f(prov.get('cpu_ms_per_request'), 3)} → {_f(aio.get('cpu_ms_per_request'), 3)} "
            f"ms of client CPU per request (the in-process comparison above: "
            f"{_f(prov.get('rate'), 0)} → {_f(aio.get('rate'), 0)} req/s), i.e. "
            f"-{_f(http_saving, 2)} ms per message in the sender.{after(http_saving)}"
            if http_saving
            else "the difference between the ProviderClient and aiohttp rows above."
        )
        + " The httpx frames are the largest group in the sender's profile"
        + (
            f" ({_f(_group(results, 'sender', 'HTTP client: httpx'), 0)}% of its samples)."
            if _group(results, "sender", "HTTP client: httpx") is not None
            else "."
        )
    )
    fixes.append(
        "**Pack many messages into one broker job** (`shared/messaging.py` `encode_job`/"
        "`decode_job`/`job_message`; `services/scheduler/service.py` `_publish`; "
        "`services/sender/service.py` `_on_job`/`_batcher`/`_process`). Today every message "
        "is one AMQP message: one confirmed publish in the scheduler, one enqueue, delivery and "
        "ack in RabbitMQ, one delivery and ack in the sender. Publish one job per lease slice "
        'instead — `{"mailing_id", "items": [[id, token], …]}` with up to ~100 items (the '
        "`(id, token)` fencing and the claim are unchanged: the claim already takes a list) — "
        "and ack it once all its results are written; retries and dead letters stay one "
        "message per job as now. Expected: the per-message broker work shrinks ~100x: "
        f"scheduler {_f(sched_ms)} ms/msg (mostly publishing: {_f(publish_ms, 3)} ms of client "
        f"CPU per confirmed publish in the broker micro-benchmark), RabbitMQ {_f(rabbit_ms)} "
        f"ms/msg, and the sender's AMQP share ({_f(amqp_share, 0)}% of its samples) mostly "
        "go. The cost: a lost or redelivered job carries many messages (the claim's token "
        "check already drops those written), and the `send` queue depth counts jobs, not "
        "messages (export the backlog metric from the database, as now)."
    )
    fixes.append(
        "**Sender: ack in delivery-tag order with `multiple=True`** (`services/sender/"
        "service.py`, `_ack` and `_send_claimed.finish`). Keep the lowest unacked delivery "
        "tag of the send channel and a set of finished tags; when a result write completes, "
        "advance over the contiguous finished tags and send one `ack(multiple=True)` for the "
        "highest (never past an unfinished one; reset the tracker when the robust channel "
        "reconnects, since tags restart). Parked and dropped jobs go through the same tracker. "
        "Expected: one ack frame per write batch instead of per message; in the broker "
        f"micro-benchmark consume+ack costs {_f(one_by_one, 3)} → {_f(multiple, 3)} ms of client "
        f"CPU and {_f(rmq_one, 3)} → {_f(rmq_multiple, 3)} ms of RabbitMQ CPU per message. "
        "(With the batched jobs above this matters much less.)"
    )
    if prov_uv.get("rate") and prov.get("rate"):
        aio_uv_ratio = (
            aio_uv["rate"] / aio["rate"] if aio.get("rate") and aio_uv.get("rate") else None
        )
        fixes.append(
            "**Run the sender and the scheduler on uvloop** (`services/sender/__main__.py`, "
            "`services/scheduler/__main__.py`: `uvloop.run(main())` instead of "
            "`asyncio.run(main())`; uvloop is already installed with `uvicorn[standard]`, and "
            "the API already runs on it). Expected from the in-process comparison: "
            f"ProviderClient {_f(prov.get('rate'), 0)} → {_f(prov_uv.get('rate'), 0)} req/s "
            f"({_f(prov_uv['rate'] / prov['rate'], 2)}x), plain aiohttp "
            f"{_f(aio.get('rate'), 0)} → {_f(aio_uv.get('rate'), 0)} req/s "
            f"({_f(aio_uv_ratio, 2)}x)"
            " — so it pays mostly together with fix 1, once the httpx layers are gone; the "
            f"event loop's own frames are {_f(_group(results, 'sender', 'asyncio'), 0)}% of the "
            f"sender's and {_f(_group(results, 'scheduler', 'asyncio'), 0)}% of the scheduler's "
            "samples."
        )
    if info and warn:
        d_sender = (info["cpu_ms_per_msg"].get("sender") or 0) - (
            warn["cpu_ms_per_msg"].get("sender") or 0
        )
        d_sched = (info["cpu_ms_per_msg"].get("scheduler") or 0) - (
            warn["cpu_ms_per_msg"].get("scheduler") or 0
        )
        costly = info["rate"] < 0.95 * warn["rate"] or d_sender + d_sched > 0.05
        measured = (
            f"in the sweep INFO ran at {_f(info['rate'] / warn['rate'], 2)}x the WARNING rate, "
            f"with {_f(d_sender, 3)} ms (sender) and {_f(d_sched, 3)} ms (scheduler) more CPU "
            "per message"
        )
        if costly:
            fixes.append(
                "**Per-message INFO lines to DEBUG** (`services/sender/service.py` `_send_now`: "
                '"provider accepted message"; `services/scheduler/service.py` `_publish`: '
                '"message queued" — keep one INFO summary per batch with counts, and the '
                "per-message lines for failures). INFO is the shipped default, so every "
                f"deployment pays it: {measured}."
            )
        else:
            fixes.append(
                "**Per-message INFO logs: no change needed for speed.** The shipped INFO level "
                "writes one JSON line per message in the sender and one in the scheduler, but "
                f"{measured} — within this machine's noise; a line costs tens of microseconds "
                "against the milliseconds above (the logging group is "
                f"{_f(_group(results, 'sender', 'logging'), 1)}% of the sender's samples even "
                "at WARNING). Moving them to DEBUG would still cut log volume (two lines per "
                "message is a lot of storage at millions of messages)."
            )
    if full:
        fixes.append(
            "**Scheduler: do not let the fan-out stall the top-ups** (`services/scheduler/"
            "service.py`, `Scheduler.round`). A fan-out chunk is awaited between two top-ups, "
            "so while a big mailing fans out the send queue is refilled at most twice per "
            "chunk, and the very first lease waits for the first chunk's INSERT (in this run: "
            f"first delivery after {_f(full.get('first_delivery_s'), 2)} s, peak queue depth "
            f"{_f(full.get('queue_peak'), 0)}, {_f(full.get('first_window_rate'), 0)} msg/s over "
            f"the first {_f(full.get('window_s'), 0)} s vs {_f(rate, 0)} msg/s in the "
            "end-to-end run; on this shared machine the load swings between runs are as large "
            "as the effect). Run the fan-out in its own task with its "
            "own session (it already is resumable and locked with `SKIP LOCKED`), or top up "
            "after every smaller chunk (`FANOUT_CHUNK_SIZE=5000`). Expected: the first-minute "
            "rate within a few % of the steady rate; the first send no longer waits for the "
            "first chunk's INSERT."
        )
    if chunk.get("execution_ms"):
        share = fk_ms / chunk["execution_ms"] if chunk["execution_ms"] else 0
        fixes.append(
            "**Fan-out: drop the per-row foreign-key checks on `message`** (a migration: drop "
            "`fk_message_client_id_client` and `fk_message_mailing_id_mailing`). Every message "
            "row is made by the fan-out's `INSERT … SELECT` from existing `client` and "
            "`mailing` rows, and neither is ever hard-deleted (soft deletes only), so the "
            "checks cannot fail; they are one trigger call each per row. In this run they were "
            f"{_f(fk_ms, 0)} of {_f(chunk['execution_ms'], 0)} ms of a "
            f"{_f(chunk.get('clients'), 0)}-client chunk ({_f(share * 100, 0)}%): expected "
            f"≈{_f(1 / (1 - share), 2) if share < 1 else '?'}x fan-out speed "
            f"({_f(full.get('fanout_s'), 1)} s for {_f(fo.get('clients'), 0)} clients now). "
            "If referential integrity must be provable in the database, check it with a "
            "periodic anti-join query instead of a trigger per inserted row."
        )
    tiny = full.get("tiny") or {}
    if tiny:
        during = tiny.get("during_fanout") or tiny.get("late_in_window") or {}
        after_fo = tiny.get("after_fanout") or {}
        fixes.append(
            "**Fan-out fairness: a small mailing must not wait for a big one's whole fan-out** "
            "(`services/scheduler/fanout.py`, `PICK_MAILING`: `ORDER BY started_at LIMIT 1` "
            "always continues the oldest mailing). Pick round-robin instead — add "
            "`fanout_touched_at` (set in `ADVANCE`) and `ORDER BY fanout_touched_at NULLS FIRST` "
            "— or smallest remaining id range first. Expected: a new mailing gets its rows "
            "within one chunk (well under a second) instead of after the big fan-out: here a "
            "100-client mailing created during the fan-out took "
            + (
                f"{_f(during.get('seconds'), 1)} s"
                if during.get("completed")
                else f"more than {_f(during.get('waited_s'), 0)} s (not completed)"
            )
            + " to complete"
            + (
                f", one created after it {_f(after_fo.get('seconds'), 1)} s (only the send "
                "queue ahead of it)"
                if after_fo
                else ""
            )
            + ". The queue itself is FIFO: a new mailing's jobs wait behind up to SEND_WINDOW "
            "jobs (≈ SEND_WINDOW / rate seconds), while a smaller window means smaller lease "
            "batches and more scheduler and database work per message (see `SEND_WINDOW=2000` "
            "in the sweep). To get both, give each running mailing its own share of the window "
            "(count live leases per mailing in `top_up`) or a queue per priority, rather than "
            "shrinking the window."
        )
    fixes.append(
        "**Smaller per-message costs in the sender** (`services/sender/service.py`, "
        "`provider.py`): look the Prometheus children up once (`PROVIDER_REQUESTS.labels("
        "outcome)` and `MESSAGES_FINISHED.labels(status)` per call are dict look-ups under a "
        "lock), drop the per-message `structlog.contextvars.bound_contextvars` when the level "
        "filters the line anyway, build the `fields` dict only when logging, and run the "
        "claim and result statements on a plain `AsyncConnection` (Core `text()` through an "
        "ORM `Session` adds its bookkeeping to every batch: "
        f"{_f(_group(results, 'sender', 'DB: SQLAlchemy'), 0)}% of the sender's samples are in "
        "SQLAlchemy). Each is a few percent."
    )
    parts.append(
        "Ranked by the gain expected on this machine (end-to-end rate first, then the "
        "fan-out and latency targets):\n"
    )
    parts.extend(f"{i}. {text}\n" for i, text in enumerate(fixes, 1))
    return "\n".join(parts)
