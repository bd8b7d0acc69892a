"""Frequency caps: at most N messages per client in a rolling window, over every mailing.

A cap is written `N/<period>`, several comma-separated (`2/24h,5/7d`); periods in minutes
(`m`), hours (`h`) or days (`d`). `FREQUENCY_CAP` is the global one (unset: off); a mailing's
own `frequency_cap` overrides it, and a `transactional` mailing is neither capped nor counted,
nor is a test send.

What a client has against a cap is counted without scanning `message` partitions:
- a sent message counts in `client_contact (client_id, bucket, count)`, kept by triggers on
  `message` (migration 0014), in the bucket of the UTC minute it was sent (`sent_at`);
- a message not yet sent (pending, queued, sending, retrying) of a counted mailing (running or
  paused, not deleted, not transactional) is a reservation: it will go out, so it counts for
  any window. Reservations are read from `message` by its (mailing_id, client_id) key, one
  range or probe per counted mailing (`open_reservations_sql`, `reservations_sql`);
- cancelled, expired and failed messages count nothing.

A client is at the cap of a rule `N/W` when the messages sent in the last W, plus its
reservations, come to N. Sent messages are counted by whole minutes, so the window is W
rounded up to the minute: a minute longer at most, never shorter (`bucket_counts`). The
fan-out (services/scheduler/fanout.py) creates the message of a client at the cap as
`cancelled` with the reason `frequency cap`; the sender's claim checks again, not counting
the message's own reservation, so a cap set or lowered mid-mailing holds for messages not yet
sent. `over_cap` and its SQL forms `over_cap_sql`, `clients_at_cap_sql` are twins
(tests/db/test_frequency_cap_twins.py).
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


# The mailings whose unsent messages are reservations, as an array (an InitPlan: PostgreSQL
# prunes `message` to their partitions when the statement starts).
COUNTED_MAILINGS_SQL = (
    "ARRAY(SELECT id FROM mailing WHERE status IN ('running', 'paused')"
    " AND deleted_at IS NULL AND NOT transactional)"
)
_OPEN = "('pending', 'queued', 'sending', 'retrying')"


def open_reservations_sql(client_id: str) -> str:
    """How many messages not yet sent the client has in counted mailings: an SQL scalar, one
    probe of the (mailing_id, client_id) key per counted mailing."""
    return (
        f"(SELECT count(*) FROM message o WHERE o.client_id = {client_id}"  # noqa: S608 (fragments of the caller's SQL)
        f" AND o.mailing_id = ANY({COUNTED_MAILINGS_SQL})"
        f" AND o.status IN {_OPEN} AND NOT o.is_test)"
    )


def reservations_sql(*, low: str | None = None, high: str | None = None) -> str:
    """Reservations per client, `(client_id, n)` rows: a FROM item; with `low` < id <= `high`
    (the fan-out's chunk range) a range of each counted mailing's key."""
    where = f" AND o.client_id > {low} AND o.client_id <= {high}" if low and high else ""
    return (
        "(SELECT o.client_id, count(*) AS n FROM message o"  # noqa: S608 (fragments of the caller's SQL)
        f" WHERE o.mailing_id = ANY({COUNTED_MAILINGS_SQL})"
        f" AND o.status IN {_OPEN} AND NOT o.is_test{where}"
        " GROUP BY o.client_id)"
    )


def clients_at_cap_sql(
    rules: str,
    reserved: str,
    *,
    low: str | None = None,
    high: str | None = None,
    now: str = "now()",
) -> str:
    """Set-based twin of `over_cap` (own = 0) for many clients at once: a SELECT of the
    distinct ids at the cap of `rules`, from `client_contact` and `reserved` (a FROM item of
    `(client_id, n)` rows, `reservations_sql`). With `low` < id <= `high` bounds (the
    fan-out's chunk range) `client_contact` is read by a range of its key, not whole."""
    where = f" AND cc.client_id > {low} AND cc.client_id <= {high}" if low and high else ""
    return (
        "SELECT DISTINCT t.client_id FROM ("  # noqa: S608 (fragments of the caller's SQL)
        "SELECT u.client_id FROM ("
        "SELECT cc.client_id, cr.cap_limit, cr.cap_seconds, cc.count AS n"
        f" FROM client_contact cc JOIN {rules} AS cr"
        f" ON cc.bucket > {now} - make_interval(secs => cr.cap_seconds) - interval '1 minute'"
        f" WHERE true{where}"
        " UNION ALL"
        f" SELECT r.client_id, cr.cap_limit, cr.cap_seconds, r.n FROM {reserved} AS r"
        f" CROSS JOIN {rules} AS cr) AS u"
        " GROUP BY u.client_id, u.cap_limit, u.cap_seconds"
        " HAVING sum(u.n) >= u.cap_limit) AS t"
    )


def over_cap_sql(
    client_id: str, rules: str, *, reserved: str, own: str = "0", now: str = "now()"
) -> str:
    """SQL twin of `over_cap` for one client: `rules` is a FROM item of
    `(cap_limit, cap_seconds)` rows (`cap_rules_sql`), `reserved` an SQL scalar of the
    client's reservations (`open_reservations_sql`); reads `client_contact` by its key."""
    return (
        f"EXISTS (SELECT 1 FROM {rules} AS cr WHERE"  # noqa: S608 (fragments of the caller's SQL)
        " (SELECT coalesce(sum(cc.count), 0) FROM client_contact cc"
        f" WHERE cc.client_id = {client_id}"
        f" AND cc.bucket > {now} - make_interval(secs => cr.cap_seconds) - interval '1 minute')"
        f" + {reserved} - {own} >= cr.cap_limit)"
    )
