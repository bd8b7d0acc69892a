"""Prometheus metrics of the pipeline (one process per container, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Scheduler
MAILINGS_STARTED = Counter("mailing_mailings_started_total", "Mailings the scheduler started")
MAILINGS_COMPLETED = Counter(
    "mailing_mailings_completed_total", "Mailings whose messages all reached a terminal status"
)
MESSAGES_CREATED = Counter("mailing_messages_created_total", "Message rows created by fan-out")
MESSAGES_QUEUED = Counter(
    "mailing_messages_queued_total", "Messages leased and published", ["reason"]
)
MESSAGES_SWEPT = Counter(
    "mailing_messages_swept_total", "Messages closed by the scheduler's sweep", ["status"]
)
BACKLOG = Gauge(
    "mailing_backlog_messages",
    "Messages of running mailings waiting to be queued (pending); the sender autoscaling signal",
)
LEASE_CAP = Gauge(
    "mailing_lease_cap", "Live leases the scheduler allows now (follows the drain rate)"
)
LIVE_LEASES = Gauge(
    "mailing_live_leases", "Messages queued or being sent (bounded by the lease cap)"
)
SEND_QUEUE_MESSAGES = Gauge(
    "mailing_send_queue_messages", "Jobs waiting in the send queue (bounded by the lease cap)"
)
SEND_QUEUE_CONSUMERS = Gauge("mailing_send_queue_consumers", "Consumers on the send queue")
SCHEDULER_ERRORS = Counter(
    "mailing_scheduler_errors_total", "Scheduler duties (round, fan-out, sweep, fold) that failed"
)
SWEEP_SECONDS = Histogram(
    "mailing_sweep_chunk_seconds",
    "Duration of one sweep chunk, by step",
    ["step"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SWEEP_TIMEOUTS = Counter(
    "mailing_sweep_timeouts_total", "Sweep chunks that hit their statement timeout", ["step"]
)
TOP_UP_SECONDS = Histogram(
    "mailing_top_up_seconds",
    "Duration of one top-up (lease and publish)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MESSAGES_UNPUBLISHED = Counter(
    "mailing_messages_unpublished_total",
    "Leased messages whose job the broker refused, made due again at once",
)
COUNTER_DELTAS_FOLDED = Counter(
    "mailing_status_deltas_folded_total", "Status count deltas folded into message_count"
)
# Retention (services/scheduler/retention.py, docs/RETENTION.md)
MESSAGE_PARTITIONS = Gauge(
    "mailing_message_partitions", "Partitions of the message table, seen at the last retention run"
)
MESSAGE_ROWS_ESTIMATED = Gauge(
    "mailing_message_rows_estimated",
    "Rows of the message table (the planner's estimate), seen at the last retention run",
)
RETENTION_PARTITIONS_DROPPED = Counter(
    "mailing_retention_partitions_dropped_total", "Message partitions retention dropped"
)
RETENTION_MESSAGES_DROPPED = Counter(
    "mailing_retention_messages_dropped_total", "Message rows dropped with their partitions"
)
RETENTION_MINUTE_ROWS_PRUNED = Counter(
    "mailing_retention_minute_rows_pruned_total", "message_minute rows older than two days deleted"
)
RETENTION_LAST_RUN = Gauge(
    "mailing_retention_last_run_timestamp_seconds", "When the last retention run finished"
)

# Sender
MESSAGES_FINISHED = Counter(
    "mailing_message_outcomes_total", "Send outcomes written by senders", ["outcome"]
)
PROVIDER_REQUESTS = Counter(
    "mailing_provider_requests_total", "Requests to the sending provider", ["outcome"]
)
PROVIDER_LATENCY = Histogram(
    "mailing_provider_request_seconds",
    "Latency of provider requests",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BREAKER_STATE = Gauge(
    "mailing_breaker_state", "Provider circuit breaker: 0 closed, 1 half-open, 2 open"
)
BREAKER_OPENED = Counter("mailing_breaker_opened_total", "Times the breaker opened", ["reason"])
JOBS_RECEIVED = Counter("mailing_jobs_received_total", "Messages taken from the queue in send jobs")
JOBS_DROPPED = Counter(
    "mailing_jobs_dropped_total", "Jobs acknowledged without sending", ["reason"]
)
DEAD_LETTERS = Counter("mailing_dead_letters_total", "Dead-lettered jobs handled", ["reason"])
PROVIDER_TOKEN_EXPIRY = Gauge(
    "mailing_provider_token_expiry_timestamp_seconds",
    "Expiry (Unix time) of the provider JWT in use; 0 when the token carries no expiry",
)
EVENT_LOOP_LAG = Histogram(
    "mailing_event_loop_lag_seconds",
    "How late the sender's event loop ran a timer (a request is written about a turn after"
    " its end-time check)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RESULT_WRITE_RETRIES = Counter(
    "mailing_result_write_retries_total", "Failed result writes retried (results kept)"
)

# Providers of kind smpp and kannel (docs/PROVIDERS.md), by the providers file's names.
PROVIDER_MESSAGES = Counter(
    "mailing_provider_messages_total",
    "Messages handed to an smpp or kannel provider, by outcome",
    ["provider", "outcome"],
)
PROVIDER_SUBMIT_SECONDS = Histogram(
    "mailing_provider_submit_seconds",
    "From handing a message to an smpp or kannel provider to its answer (all parts)",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_BINDS_UP = Gauge("mailing_provider_binds_up", "SMPP binds up in this sender", ["provider"])
PROVIDER_BIND_FAILURES = Counter(
    "mailing_provider_bind_failures_total",
    "SMPP binds refused or lost",
    ["provider", "reason"],
)
PROVIDER_DELIVERIES = Counter(
    "mailing_provider_deliveries_total",
    "deliver_sm received over SMPP: receipts by outcome, replies, unreadable ones",
    ["provider", "kind"],
)
RECEIPTS = Counter(
    "mailing_receipts_total",
    "Delivery receipts stored (shared/receipts.py): matched to a sent message (at once or from"
    " the pending ones), early (kept until their message is known), duplicate (their message"
    " had its receipt already), unknown (no message after the hold: dropped)",
    ["provider", "outcome"],
)
REPLIES = Counter(
    "mailing_replies_total",
    "Texts from phones stored (shared/replies.py); kind stop: an exact stop word that opted out",
    ["provider", "kind"],
)
PROVIDER_RATE_SHARE = Gauge(
    "mailing_provider_rate_share",
    "This sender's share of a provider's max_tps (max_tps / live senders), messages per second",
    ["provider"],
)
