"""Send windows: parsing, whether a window is open, and when it next opens (incl. DST)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.send_window import (
    SendWindow,
    is_open_at,
    is_window_open,
    next_window_open,
    parse_hhmm,
    parse_send_window,
)

BERLIN = "Europe/Berlin"
KOLKATA = "Asia/Kolkata"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold)  # type: ignore[misc]


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00", time(0, 0)),
        ("09:05", time(9, 5)),
        ("23:59", time(23, 59)),
        ("12:30", time(12, 30)),
    ],
)
def test_parse_hhmm(text: str, expected: time) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "9:00",
        "09:0",
        "24:00",
        "12:60",
        "25:00",
        "-1:00",
        "09:00:00",
        "0900",
        "09.00",
        "",
        " 09:00",
        "09:00 ",
        "09:00\n",
        "٠٩:٠٠",  # Arabic-Indic digits
        "ab:cd",
    ],
)
def test_parse_hhmm_rejects_bad_formats(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm(text)


def test_parse_send_window() -> None:
    window = parse_send_window("09:00", "21:00")
    assert window == SendWindow(time(9), time(21))
    assert not window.wraps_midnight
    assert parse_send_window("22:00", "06:00").wraps_midnight


@pytest.mark.parametrize("value", ["00:00", "09:00", "23:59"])
def test_equal_start_and_end_is_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="differ"):
        parse_send_window(value, value)


@pytest.mark.parametrize(("start", "end"), [("9:00", "10:00"), ("09:00", "24:00")])
def test_parse_send_window_rejects_bad_times(start: str, end: str) -> None:
    with pytest.raises(ValueError):
        parse_send_window(start, end)


# --- is the window open ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "open_"),
    [("08:59", False), ("09:00", True), ("15:00", True), ("20:59", True), ("21:00", False)],
)
def test_plain_window_is_half_open(at: str, open_: bool) -> None:
    assert is_open_at(parse_send_window("09:00", "21:00"), parse_hhmm(at)) is open_


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        ("21:59", False),
        ("22:00", True),
        ("23:59", True),
        ("00:00", True),
        ("05:59", True),
        ("06:00", False),
        ("12:00", False),
    ],
)
def test_window_wrapping_midnight(at: str, open_: bool) -> None:
    assert is_open_at(parse_send_window("22:00", "06:00"), parse_hhmm(at)) is open_


def test_no_window_is_always_open() -> None:
    assert is_window_open(None, BERLIN, utc(2026, 1, 1, 3, 0))


def test_is_window_open_uses_the_clients_local_time() -> None:
    window = parse_send_window("09:00", "21:00")
    now = utc(2026, 6, 1, 5, 0)  # 08:00 in Moscow, 10:30 in Kolkata, 07:00 in Berlin (CEST)
    assert not is_window_open(window, "Europe/Moscow", now)
    assert is_window_open(window, KOLKATA, now)
    assert not is_window_open(window, BERLIN, now)
    assert is_window_open(window, "Asia/Vladivostok", now)  # 15:00


def test_is_window_open_with_half_hour_offset() -> None:
    window = parse_send_window("09:00", "21:00")
    assert not is_window_open(window, KOLKATA, utc(2026, 6, 1, 3, 29))  # 08:59 IST
    assert is_window_open(window, KOLKATA, utc(2026, 6, 1, 3, 30))  # 09:00 IST
    assert is_window_open(window, KOLKATA, utc(2026, 6, 1, 15, 29))  # 20:59 IST
    assert not is_window_open(window, KOLKATA, utc(2026, 6, 1, 15, 30))  # 21:00 IST


def test_is_window_open_follows_dst() -> None:
    window = parse_send_window("09:00", "21:00")
    # 08:30 UTC is 09:30 in Berlin in winter (CET) and 10:30 in summer (CEST).
    assert is_window_open(window, BERLIN, utc(2026, 1, 15, 8, 30))
    # 07:30 UTC: 08:30 CET (closed) in winter, 09:30 CEST (open) in summer.
    assert not is_window_open(window, BERLIN, utc(2026, 1, 15, 7, 30))
    assert is_window_open(window, BERLIN, utc(2026, 7, 15, 7, 30))


# --- next opening ----------------------------------------------------------------------------


def test_next_open_is_now_when_open_or_without_window() -> None:
    now = utc(2026, 6, 1, 12, 0)
    assert next_window_open(None, BERLIN, now) == now
    assert next_window_open(parse_send_window("09:00", "21:00"), BERLIN, now) == now


def test_next_open_later_today_and_tomorrow() -> None:
    window = parse_send_window("09:00", "21:00")
    # 06:00 CEST: opens at 09:00 the same day.
    assert next_window_open(window, BERLIN, utc(2026, 6, 1, 4, 0)) == local(BERLIN, 2026, 6, 1, 9)
    # 22:00 CEST: opens at 09:00 the next day.
    assert next_window_open(window, BERLIN, utc(2026, 6, 1, 20, 0)) == local(BERLIN, 2026, 6, 2, 9)
    # Exactly at the end: closed, the next day.
    assert next_window_open(window, BERLIN, utc(2026, 6, 1, 19, 0)) == local(BERLIN, 2026, 6, 2, 9)


def test_next_open_of_a_window_wrapping_midnight() -> None:
    window = parse_send_window("22:00", "06:00")
    # 12:00 CEST: opens at 22:00 the same local day.
    assert next_window_open(window, BERLIN, utc(2026, 6, 1, 10, 0)) == local(BERLIN, 2026, 6, 1, 22)
    # 06:00 CEST exactly: just closed, opens at 22:00 that day.
    assert next_window_open(window, BERLIN, utc(2026, 6, 1, 4, 0)) == local(BERLIN, 2026, 6, 1, 22)
    # 23:30 CEST: open now.
    now = utc(2026, 6, 1, 21, 30)
    assert next_window_open(window, BERLIN, now) == now


def test_next_open_in_a_half_hour_offset_zone() -> None:
    window = parse_send_window("09:00", "21:00")
    opening = next_window_open(window, KOLKATA, utc(2026, 6, 1, 0, 0))  # 05:30 IST
    assert opening == utc(2026, 6, 1, 3, 30)  # 09:00 IST
    opening = next_window_open(window, KOLKATA, utc(2026, 6, 1, 16, 0))  # 21:30 IST
    assert opening == utc(2026, 6, 2, 3, 30)
    # Across the UTC date line: 23:00 UTC is already 04:30 the next day in Kolkata.
    opening = next_window_open(window, KOLKATA, utc(2026, 6, 1, 23, 0))
    assert opening == utc(2026, 6, 2, 3, 30)


def test_next_open_across_the_spring_forward_switch() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    window = parse_send_window("09:00", "21:00")
    # Saturday 22:00 CET -> Sunday 09:00 CEST, which is 07:00 UTC (not 08:00).
    opening = next_window_open(window, BERLIN, utc(2026, 3, 28, 21, 0))
    assert opening == utc(2026, 3, 29, 7, 0)
    assert opening.astimezone(ZoneInfo(BERLIN)).utcoffset() == timedelta(hours=2)


def test_next_open_across_the_fall_back_switch() -> None:
    # Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET.
    window = parse_send_window("09:00", "21:00")
    opening = next_window_open(window, BERLIN, utc(2026, 10, 24, 20, 0))  # 22:00 CEST
    assert opening == utc(2026, 10, 25, 8, 0)  # 09:00 CET


def test_next_open_when_the_start_falls_in_the_spring_forward_gap() -> None:
    # 02:30 does not exist on 2026-03-29 in Berlin; the moment must still be open.
    window = parse_send_window("02:30", "04:00")
    now = utc(2026, 3, 28, 12, 0)
    opening = next_window_open(window, BERLIN, now)
    assert utc(2026, 3, 29, 1, 0) <= opening <= utc(2026, 3, 29, 1, 30)  # 03:00-03:30 CEST
    assert is_window_open(window, BERLIN, opening.astimezone(UTC))


def test_next_open_skips_a_window_swallowed_by_the_spring_forward_gap() -> None:
    # 02:00-03:00 never happens on 2026-03-29 in Berlin: the next opening is on Monday.
    window = parse_send_window("02:00", "03:00")
    opening = next_window_open(window, BERLIN, utc(2026, 3, 28, 12, 0))
    assert opening == utc(2026, 3, 30, 0, 0)  # 02:00 CEST
    assert is_window_open(window, BERLIN, opening.astimezone(UTC))


def test_next_open_during_the_repeated_fall_back_hour_is_not_in_the_past() -> None:
    # 2026-10-25, 01:20 UTC is 02:20 CET, the second pass through 02:00-03:00 in Berlin.
    # 02:30 CEST already passed (00:30 UTC); 02:30 CET (01:30 UTC) is still to come.
    window = parse_send_window("02:30", "02:40")
    now = utc(2026, 10, 25, 1, 20)
    opening = next_window_open(window, BERLIN, now)
    # (An ambiguous local time never compares equal across zones: compare instants in UTC.)
    assert opening.astimezone(UTC) == utc(2026, 10, 25, 1, 30)
    assert is_window_open(window, BERLIN, opening.astimezone(UTC))


def test_next_open_in_new_york_spring_forward() -> None:
    window = parse_send_window("02:15", "02:45")  # inside the 2026-03-08 gap in New York
    opening = next_window_open(window, "America/New_York", utc(2026, 3, 7, 12, 0))
    assert opening.astimezone(UTC) >= utc(2026, 3, 8, 7, 0)
    assert is_window_open(window, "America/New_York", opening.astimezone(UTC))


# --- properties ------------------------------------------------------------------------------

ZONES = [
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kathmandu",  # +05:45
    "Europe/Moscow",
    "America/St_Johns",  # -03:30 with DST
    "Pacific/Chatham",  # +12:45 with DST
    "UTC",
]

hhmm = st.builds(time, st.integers(0, 23), st.integers(0, 59))
windows = st.tuples(hhmm, hhmm).filter(lambda w: w[0] != w[1]).map(lambda w: SendWindow(*w))
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@given(st.one_of(st.none(), windows), st.sampled_from(ZONES), moments)
def test_next_window_open_is_open_and_not_in_the_past(
    window: SendWindow | None, zone: str, now: datetime
) -> None:
    opening = next_window_open(window, zone, now)
    assert opening.tzinfo is not None
    instant = opening.astimezone(UTC)
    assert instant >= now
    assert is_window_open(window, zone, instant)
    # Never more than a couple of days away (one day, plus a day a DST gap may swallow).
    assert instant - now <= timedelta(days=2, hours=1)
    if is_window_open(window, zone, now):
        assert opening == now


@given(windows, st.sampled_from(ZONES), moments)
def test_the_window_is_closed_just_before_it_opens(
    window: SendWindow, zone: str, now: datetime
) -> None:
    opening = next_window_open(window, zone, now).astimezone(UTC)
    if opening > now:
        assert not is_window_open(window, zone, now)


@given(windows, st.sampled_from(["UTC", "Asia/Kolkata", "Asia/Kathmandu"]), moments)
def test_without_dst_the_next_opening_is_the_first_open_minute(
    window: SendWindow, zone: str, now: datetime
) -> None:
    # In a zone with a fixed offset, nothing in [now, opening) is open: check minute by minute
    # from the next whole minute.
    opening = next_window_open(window, zone, now).astimezone(UTC)
    probe = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while probe < opening:
        assert not is_window_open(window, zone, probe)
        probe += timedelta(minutes=1)


@given(windows, hhmm)
def test_is_open_at_agrees_with_the_definition(window: SendWindow, at: time) -> None:
    if window.start < window.end:
        expected = window.start <= at < window.end
    else:
        expected = not (window.end <= at < window.start)
    assert is_open_at(window, at) is expected
