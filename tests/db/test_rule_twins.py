"""Rules with a Python and an SQL form: both run on the real database and must agree.

The fan-out and the sender's claim evaluate the send window, the filter, who receives a
mailing and the end time in SQL; the API, the tests and the sender evaluate them in Python.
Hypothesis picks the cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from shared.domain.end_time import may_start_at, too_late_to_start_sql
from shared.domain.filters import RecipientsSql, is_recipient, matches_filter, matches_filter_sql
from shared.domain.send_window import (
    SendWindow,
    is_window_open,
    next_window_open,
    next_window_open_sql,
    window_open_sql,
)
from tests.support import database

ZONES = [
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
    "UTC",
]
FIXED_OFFSET_ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu"]

hhmm = st.builds(time, st.integers(0, 23), st.integers(0, 59))
windows = st.tuples(hhmm, hhmm).filter(lambda w: w[0] != w[1]).map(lambda w: SendWindow(*w))
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)
TWINS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def conn(db_name: str) -> Iterator[psycopg.Connection]:
    with database.connect(db_name) as connection:
        yield connection


NOW = "CAST(%(now)s AS timestamptz)"
WINDOW_ARGS = ("CAST(%(tz)s AS text)", "CAST(%(ws)s AS time)", "CAST(%(we)s AS time)")


def _window_params(window: SendWindow | None, zone: str, now: datetime) -> dict[str, object]:
    return {
        "tz": zone,
        "ws": window.start if window else None,
        "we": window.end if window else None,
        "now": now,
    }


@TWINS
@given(st.one_of(st.none(), windows), st.sampled_from(ZONES), moments)
def test_window_open_agrees(
    conn: psycopg.Connection, window: SendWindow | None, zone: str, now: datetime
) -> None:
    row = conn.execute(
        f"SELECT {window_open_sql(*WINDOW_ARGS, now=NOW)}", _window_params(window, zone, now)
    ).fetchone()
    assert row is not None
    assert row[0] is is_window_open(window, zone, now)


@TWINS
@given(st.one_of(st.none(), windows), st.sampled_from(FIXED_OFFSET_ZONES), moments)
def test_next_window_open_agrees_without_dst(
    conn: psycopg.Connection, window: SendWindow | None, zone: str, now: datetime
) -> None:
    row = conn.execute(
        f"SELECT {next_window_open_sql(*WINDOW_ARGS, now=NOW)}", _window_params(window, zone, now)
    ).fetchone()
    assert row is not None
    assert row[0] == next_window_open(window, zone, now)


@TWINS
@given(st.one_of(st.none(), windows), st.sampled_from(ZONES), moments)
def test_next_window_open_agrees_away_from_dst_changes(
    conn: psycopg.Connection, window: SendWindow | None, zone: str, now: datetime
) -> None:
    """In zones with DST both forms agree except where the opening falls next to a change
    (an opening swallowed by a gap, or a start that comes twice after a fall-back): there the
    Python form walks on to a moment that is really open, the SQL form takes the wall-clock
    reading. The SQL opening is only `not_before` (the claim checks the window again)."""
    row = conn.execute(
        f"SELECT {next_window_open_sql(*WINDOW_ARGS, now=NOW)}", _window_params(window, zone, now)
    ).fetchone()
    assert row is not None
    python = next_window_open(window, zone, now)
    if row[0] != python:
        tz = ZoneInfo(zone)
        around = [python.astimezone(UTC) + timedelta(hours=h) for h in range(-26, 27)]
        offsets = {t.astimezone(tz).utcoffset() for t in around}
        assert len(offsets) > 1, f"SQL {row[0]} vs Python {python} with no DST change near"
        # Never later than the real opening, so no message waits longer than it must.
        assert row[0] <= python


codes = st.text(alphabet="0123456789", min_size=3, max_size=3)
tags = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"))


@TWINS
@given(codes, tags, st.lists(codes, max_size=4), st.lists(tags, max_size=4))
def test_filter_agrees(
    conn: psycopg.Connection, code: str, tag: str, code_list: list[str], tag_list: list[str]
) -> None:
    conditions = matches_filter_sql(
        operator_code="CAST(%(code)s AS text)",
        tag="CAST(%(tag)s AS text)",
        codes="CAST(%(codes)s AS text[])" if code_list else None,
        tags="CAST(%(tags)s AS text[])" if tag_list else None,
    )
    row = conn.execute(
        f"SELECT {' AND '.join(conditions) or 'true'}",
        {"code": code, "tag": tag, "codes": code_list, "tags": tag_list},
    ).fetchone()
    assert row is not None
    expected = matches_filter(operator_code=code, tag=tag, operator_codes=code_list, tags=tag_list)
    assert row[0] is expected


@TWINS
@given(
    st.booleans(),
    st.booleans(),
    codes,
    tags,
    st.lists(codes, max_size=4),
    st.lists(tags, max_size=4),
)
def test_recipients_agree(
    conn: psycopg.Connection,
    deleted: bool,
    opted_out: bool,
    code: str,
    tag: str,
    code_list: list[str],
    tag_list: list[str],
) -> None:
    """The fan-out's and the check's rule, over a row of the real `client` type."""
    recipients = RecipientsSql(
        "c",
        codes="CAST(%(codes)s AS text[])" if code_list else None,
        tags="CAST(%(tags)s AS text[])" if tag_list else None,
    )
    moment = "2030-01-01T00:00:00+00:00"
    client = {
        "operator_code": code,
        "tag": tag,
        "deleted_at": moment if deleted else None,
        "opted_out_at": moment if opted_out else None,
    }
    row = conn.execute(
        f"SELECT {' AND '.join(recipients.conditions())}, {recipients.opted_out()}"
        " FROM jsonb_populate_record(NULL::client, %(client)s) AS c",
        {"client": Jsonb(client), "codes": code_list, "tags": tag_list},
    ).fetchone()
    assert row is not None
    assert row[0] is is_recipient(
        deleted=deleted,
        opted_out=opted_out,
        operator_code=code,
        tag=tag,
        operator_codes=code_list,
        tags=tag_list,
    )
    assert row[1] is opted_out


@TWINS
@given(
    moments,
    st.integers(min_value=-10_000_000, max_value=10_000_000),
    st.integers(min_value=0, max_value=100_000_000),
)
def test_end_time_agrees(
    conn: psycopg.Connection, now: datetime, end_offset_us: int, margin_us: int
) -> None:
    end_at = now + timedelta(microseconds=end_offset_us)
    margin_s = margin_us / 1_000_000
    row = conn.execute(
        f"SELECT {too_late_to_start_sql('CAST(%(end)s AS timestamptz)', '%(margin)s', NOW)}",
        {"end": end_at, "margin": margin_s, "now": now},
    ).fetchone()
    assert row is not None
    assert row[0] is not may_start_at(now, end_at, margin_s)
