"""The end-time rule: nothing reaches a client after its mailing's `end_at`.

- No request starts within `END_SAFETY_MARGIN_S` of the end: the sender checks `may_start`
  before handing a request to the HTTP client, and the client checks `last_start_at` again as
  it writes it, a loop turn later (a turn can outlast the margin on a loaded machine).
- No request's timeout runs past the end, and no job waits in a queue past it (its TTL).

Each rule has a Python form (the sender's own clock, from the database's answer) and an SQL
form (claim, dead letters, lease, sweep: the database's clock), built here side by side.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# The `last_error` of a message that the end time stopped.
END_REACHED = "end time reached"
# A job's TTL only hurries the expiry path (the claim enforces the end time), so it is capped
# well below RabbitMQ's limit for mailings that end far in the future.
MAX_JOB_TTL_S = 3600.0


def may_start(seconds_to_end: float, margin_s: float, *, after_s: float = 0.0) -> bool:
    """May a request start `after_s` seconds from now? Only before `end - margin`."""
    return seconds_to_end - after_s > margin_s


def may_start_at(now: datetime, end_at: datetime, margin_s: float) -> bool:
    """`may_start` with wall-clock moments."""
    return now < end_at - timedelta(seconds=margin_s)


def last_start_at(now: float, seconds_to_end: float, margin_s: float) -> float:
    """The last moment, on the clock `now` is read from, at which a request may be written:
    `end - margin`. A request the loop gets to write only after it is not sent at all."""
    return now + seconds_to_end - margin_s


def request_timeout_s(timeout_s: float, seconds_to_end: float) -> float:
    """A request's timeout: the provider timeout, cut at the end time (<= 0: do not start)."""
    return min(timeout_s, seconds_to_end)


def job_ttl_s(seconds_to_end: float) -> float:
    """How long a send job may wait in the queue: until the end, within RabbitMQ's bounds."""
    return min(max(seconds_to_end, 0.001), MAX_JOB_TTL_S)


# --- SQL forms (arguments are SQL expressions: columns or bind parameters) ------------------


def too_late_to_start_sql(end_at: str, margin_s: str, now: str = "now()") -> str:
    """True when no request may start any more: `not may_start` in the database's clock."""
    return f"({now} >= {end_at} - make_interval(secs => {margin_s}))"


def ended_sql(end_at: str, now: str = "now()") -> str:
    """The end has come: whatever is not held by a sender is over (the sweep)."""
    return f"({end_at} <= {now})"


def not_ended_sql(end_at: str, now: str = "now()") -> str:
    """The end has not come: the mailing's messages may still be leased."""
    return f"({end_at} > {now})"


def seconds_to_end_sql(end_at: str, now: str = "now()") -> str:
    return f"extract(epoch FROM {end_at} - {now})"
