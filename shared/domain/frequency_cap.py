"""Frequency caps: at most N messages per client in a rolling window, over every mailing.

A cap is written `N/<period>`, several comma-separated (`2/24h,5/7d`); periods in minutes
(`m`), hours (`h`) or days (`d`). `FREQUENCY_CAP` is the global one (unset: off); a mailing's
own `frequency_cap` overrides it, and a `transactional` mailing is neither capped nor counted,
nor is a test send.

What is counted is kept per client in `client_contact (client_id, bucket, count)` by triggers
on `message` (migration 0014), never by scanning `message`:
- a message of a counted mailing that is open (pending, queued, sending, retrying) is a
  reservation, in the bucket `infinity`: it will go out, so it counts for any window;
- a sent one counts in the bucket of the minute it was sent (`sent_at`);
- cancelled, expired or failed ones count nothing (the reservation is given back).

A client is at the cap of a rule `N/W` when the messages sent in the last W, plus its open
reservations, come to N. Sent messages are counted by whole minutes, so the window is W
rounded up to the minute: a minute longer at most, never shorter (`bucket_counts`). The
fan-out (services/scheduler/fanout.py) creates the message of a client at the cap as
`cancelled` with the reason `frequency cap`; the sender's claim checks again, not counting
the message's own reservation, so a cap set or lowered mid-mailing holds for messages not yet
sent. `over_cap` and `over_cap_sql` are twins (tests/db/test_frequency_cap_twins.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

FREQUENCY_CAP_REASON = "frequency cap"

PERIOD_SECONDS = {"m": 60, "h": 3600, "d": 86400}
# The longest window a rule may have: the contact summary keeps sent messages this long.
MAX_WINDOW = timedelta(days=366)
_RULE = re.compile(r"^\s*(\d{1,6})\s*/\s*(\d{1,6})\s*([mhd])\s*$")
# The canonical form (what `format_caps` writes), as the SQL twin parses it.
_SQL_RULE_PATTERN = r"(\d+)/(\d+)([mhd])"


@dataclass(frozen=True, slots=True, order=True)
class CapRule:
    """At most `limit` messages per client in any `amount``unit` rolling window."""

    limit: int
    amount: int
    unit: str

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.amount * PERIOD_SECONDS[self.unit])

    def __str__(self) -> str:
        return f"{self.limit}/{self.amount}{self.unit}"


def parse_caps(text: str) -> tuple[CapRule, ...]:
    """`2/24h,5/7d` -> rules; an empty text is no cap. ValueError says what is wrong."""
    rules = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _RULE.match(part)
        if match is None:
            raise ValueError(
                f"frequency cap {part.strip()!r} must be N/<period>, e.g. 2/24h or 5/7d"
                " (periods in m, h or d)"
            )
        rule = CapRule(int(match[1]), int(match[2]), match[3])
        if rule.limit < 1 or rule.amount < 1:
            raise ValueError(f"frequency cap {rule}: the count and the period must be positive")
        if rule.window > MAX_WINDOW:
            raise ValueError(f"frequency cap {rule}: the period may be at most 366d")
        rules.append(rule)
    return tuple(sorted(set(rules), key=lambda r: (r.window, r.limit)))


def format_caps(rules: Iterable[CapRule]) -> str:
    return ",".join(str(rule) for rule in rules)


def normalize_caps(text: str | None) -> str | None:
    """The canonical form of a cap as written (None or empty: no cap of its own)."""
    if text is None:
        return None
    rules = parse_caps(text)
    return format_caps(rules) if rules else None


def effective_caps(
    mailing_cap: str | None, global_cap: str | None, *, transactional: bool
) -> tuple[CapRule, ...]:
    """The rules a mailing's messages are held to: none for a transactional mailing, its own
    if it has them, else FREQUENCY_CAP."""
    if transactional:
        return ()
    chosen = mailing_cap if mailing_cap is not None else global_cap
    return parse_caps(chosen or "")


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def bucket_counts(sent_at: datetime, now: datetime, rule: CapRule) -> bool:
    """Whether a message sent at `sent_at` counts for `rule` at `now`: its minute's bucket
    starts less than the window plus a minute before now."""
    return _minute(sent_at) > now - rule.window - timedelta(minutes=1)


def contacts(sent: Sequence[datetime], reserved: int, now: datetime, rule: CapRule) -> int:
    """What a client has against `rule` at `now`: sent messages in the window and reservations."""
    return reserved + sum(1 for moment in sent if bucket_counts(moment, now, rule))


def over_cap(
    sent: Sequence[datetime],
    reserved: int,
    now: datetime,
    rules: Iterable[CapRule],
    *,
    own: int = 0,
) -> bool:
    """True when the client may get no further message: some rule's count, less `own` (1 when
    one of the reservations is the message being decided), has reached its limit."""
    return any(contacts(sent, reserved, now, rule) - own >= rule.limit for rule in rules)


def cap_rules_sql(caps: str) -> str:
    """The rules of a cap text (an SQL text expression in the canonical form) as rows
    `(cap_limit, cap_seconds)`: a FROM item."""
    seconds = " ".join(f"WHEN '{unit}' THEN {s}" for unit, s in PERIOD_SECONDS.items())
    return (
        "(SELECT CAST(r.p[1] AS int) AS cap_limit,"  # noqa: S608 (constant fragments)
        f" CAST(r.p[2] AS int) * CASE r.p[3] {seconds} END AS cap_seconds"
        f" FROM regexp_matches(coalesce({caps}, ''), '{_SQL_RULE_PATTERN}', 'g') AS r(p))"
    )


def clients_at_cap_sql(
    clients: str,
    rules: str,
    *,
    low: str | None = None,
    high: str | None = None,
    now: str = "now()",
) -> str:
    """Set-based twin of `over_cap` (own = 0) for many clients at once: a SELECT of the
    distinct ids of `clients` (a FROM item with a column `id`) at the cap of `rules`. With
    `low` < id <= `high` bounds (the fan-out's chunk range) `client_contact` is read by a
    range of its key, not whole: one join instead of a probe per client and rule."""
    where = ""
    if low is not None and high is not None:
        where = f" WHERE cc.client_id > {low} AND cc.client_id <= {high}"
    return (
        "SELECT DISTINCT cc.client_id FROM ("  # noqa: S608 (fragments of the caller's SQL)
        f"SELECT cc.client_id FROM {clients} AS k"
        " JOIN client_contact cc ON cc.client_id = k.id"
        f" JOIN {rules} AS cr ON cc.bucket > {now} - make_interval(secs => cr.cap_seconds)"
        f" - interval '1 minute'{where}"
        " GROUP BY cc.client_id, cr.cap_limit, cr.cap_seconds"
        " HAVING sum(cc.count) >= cr.cap_limit) AS cc"
    )


def over_cap_sql(client_id: str, rules: str, *, own: str = "0", now: str = "now()") -> str:
    """SQL twin of `over_cap`: `rules` is a FROM item of `(cap_limit, cap_seconds)` rows
    (`cap_rules_sql`, or a CTE of it), `client_id` the client's id; reads `client_contact`
    by its key, one probe per rule."""
    return (
        f"EXISTS (SELECT 1 FROM {rules} AS cr WHERE"  # noqa: S608 (constant fragments)
        " (SELECT coalesce(sum(cc.count), 0) FROM client_contact cc"
        f" WHERE cc.client_id = {client_id}"
        f" AND cc.bucket > {now} - make_interval(secs => cr.cap_seconds) - interval '1 minute')"
        f" - {own} >= cr.cap_limit)"
    )
