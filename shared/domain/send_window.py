"""Send windows: the hours of the client's local day in which a mailing may reach them.

A window is `[start, end)` in local wall-clock time and may wrap midnight (22:00-06:00).
The fan-out and the sender's claim evaluate the same rules in SQL, per row and without a round
trip to Python: the `*_sql` functions below build those forms (their arguments are SQL
expressions: columns or bind parameters). tests/db/test_rule_twins.py runs both forms on the
real database and compares them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class SendWindow:
    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError("send window start and end must differ")

    @property
    def wraps_midnight(self) -> bool:
        return self.end < self.start


def parse_hhmm(value: str) -> time:
    match = _HHMM.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00-23:59)")
    return time(int(match[1]), int(match[2]))


def parse_send_window(start: str, end: str) -> SendWindow:
    return SendWindow(parse_hhmm(start), parse_hhmm(end))


def is_open_at(window: SendWindow, local: time) -> bool:
    if window.wraps_midnight:
        return local >= window.start or local < window.end
    return window.start <= local < window.end


def is_window_open(window: SendWindow | None, timezone: str, now: datetime) -> bool:
    if window is None:
        return True
    return is_open_at(window, now.astimezone(ZoneInfo(timezone)).time())


def next_window_open(window: SendWindow | None, timezone: str, now: datetime) -> datetime:
    """`now` if the window is open, otherwise the next moment it opens (timezone-aware)."""
    if window is None or is_window_open(window, timezone, now):
        return now
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    opening_day = local.date() if local.time() < window.start else local.date() + timedelta(days=1)
    # Wall-clock arithmetic, as PostgreSQL's `AT TIME ZONE` does it (a start in a DST gap reads
    # with the offset before the change). Around a DST change that moment can be past (after a
    # fall-back the start comes again: take the repeat, fold=1) or closed (a spring-forward gap
    # swallowed the window: take the next day). Compare instants, never wall times.
    for _ in range(7):
        for fold in (0, 1):
            opening = datetime.combine(opening_day, window.start, tzinfo=zone).replace(fold=fold)
            instant = opening.astimezone(UTC)
            if instant >= now and is_window_open(window, timezone, instant):
                return opening
        opening_day += timedelta(days=1)
    raise AssertionError(f"send window {window} never opens in {timezone}")  # pragma: no cover


# --- SQL forms ------------------------------------------------------------------------------


def local_now_sql(timezone: str, now: str = "now()") -> str:
    return f"({now} AT TIME ZONE {timezone})"


def window_open_sql(timezone: str, start: str, end: str, now: str = "now()") -> str:
    """`is_window_open`: true when there is no window or the local time is in [start, end)."""
    local = f"{local_now_sql(timezone, now)}::time"
    return (
        f"({start} IS NULL OR CASE WHEN {start} < {end} "
        f"THEN {local} >= {start} AND {local} < {end} "
        f"ELSE {local} >= {start} OR {local} < {end} END)"
    )


def next_window_open_sql(timezone: str, start: str, end: str, now: str = "now()") -> str:
    """`next_window_open`: `now` when the window is open, else the next moment the client's
    local clock reads `start`."""
    local = local_now_sql(timezone, now)
    opening_day = f"({local}::date + CASE WHEN {local}::time < {start} THEN 0 ELSE 1 END)"
    return (
        f"CASE WHEN {window_open_sql(timezone, start, end, now)} THEN {now} "
        f"ELSE ({opening_day} + {start}) AT TIME ZONE {timezone} END"
    )
