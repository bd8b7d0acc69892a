"""Test sends: one message of a mailing's text to one phone, now, through the real sender path.

A test (`POST /mailings/{id}/test`) is an operator's explicit act, so neither the mailing's
status, start time, send window nor end time holds it back. It has a life of its own instead:
`LIFETIME_S` from its creation. Its deadline plays the part of the end time everywhere on the
path (the claim, the pre-request check, the provider timeout, the retry decision, the job TTL,
the sweep), so a test that cannot go out in time is `expired` and never retries for ever.

Python and SQL forms of the deadline live here together (tests/db/test_rule_twins.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Long enough for the retry ladder's first dozen tiers and a few breaker cooldowns; short
# enough that a test nobody could deliver says so within minutes.
LIFETIME_S = 600.0


def deadline(created_at: datetime) -> datetime:
    """The moment a test send stops being tried."""
    return created_at + timedelta(seconds=LIFETIME_S)


def deadline_sql(created_at: str) -> str:
    """`deadline` in SQL; `created_at` is an SQL expression (the message's column)."""
    return f"({created_at} + make_interval(secs => {LIFETIME_S}))"


def end_at_sql(message: str, mailing: str) -> str:
    """The end that applies to a message: its mailing's `end_at`, or a test's own deadline.
    `message` and `mailing` are the tables' aliases."""
    return (
        f"(CASE WHEN {message}.is_test THEN {deadline_sql(f'{message}.created_at')}"
        f" ELSE {mailing}.end_at END)"
    )
