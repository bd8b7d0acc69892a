"""The frequency cap's Python and SQL twins agree, on the real database (hypothesis picks the
cases): `over_cap` on a client's send times and reservations, `over_cap_sql` on the same
client's `client_contact` rows, bucketed by minute as the triggers write them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.frequency_cap import (
    CapRule,
    cap_rules_sql,
    clients_at_cap_sql,
    format_caps,
    over_cap,
    over_cap_sql,
    parse_caps,
)
from tests.support import database

TWINS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 12, 7, 12, 0, 30, 250_000, tzinfo=UTC)

rules = st.builds(
    CapRule, st.integers(1, 4), st.integers(1, 90), st.sampled_from(["m", "h", "d"])
).map(lambda r: r if r.window <= timedelta(days=30) else CapRule(r.limit, r.amount, "h"))
# Send times around the windows' edges: up to 31 days back, to the second.
sent_times = st.lists(
    st.integers(0, 31 * 86400).map(lambda s: NOW - timedelta(seconds=s, microseconds=s % 7)),
    max_size=8,
)


@pytest.fixture(scope="module")
def conn(db_name: str) -> Iterator[psycopg.Connection]:
    with database.connect(db_name) as connection:
        yield connection


def sql_over_cap(
    conn: psycopg.Connection, sent: list[datetime], reserved: int, caps: str, own: int
) -> bool:
    client_id = 987_654_321
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM client_contact WHERE client_id = %s", [client_id])
        for moment in sent:
            conn.execute(
                "INSERT INTO client_contact AS cc (client_id, bucket, count)"
                " VALUES (%s, date_trunc('minute', CAST(%s AS timestamptz), 'UTC'), 1)"
                " ON CONFLICT (client_id, bucket) DO UPDATE SET count = cc.count + 1",
                [client_id, moment],
            )
        sql = over_cap_sql(
            "CAST(%(client)s AS bigint)",
            cap_rules_sql("CAST(%(caps)s AS text)"),
            reserved="CAST(%(reserved)s AS bigint)",
            own="CAST(%(own)s AS int)",
            now="CAST(%(now)s AS timestamptz)",
        )
        # The set-based twin (fan-out, check) for the same client, when `own` is 0.
        reservations = (
            "(SELECT CAST(%(client)s AS bigint) AS client_id, CAST(%(reserved)s AS bigint) AS n"
            " WHERE CAST(%(reserved)s AS bigint) > 0)"
        )
        in_set = clients_at_cap_sql(
            cap_rules_sql("CAST(%(caps)s AS text)"),
            reservations,
            now="CAST(%(now)s AS timestamptz)",
        )
        row = conn.execute(
            f"SELECT {sql}, CAST(%(client)s AS bigint) IN ({in_set})",
            {"client": client_id, "caps": caps, "own": own, "now": NOW, "reserved": reserved},
        ).fetchone()
    assert row is not None
    if own == 0:
        assert row[1] is row[0]
    return bool(row[0])


@TWINS
@given(sent_times, st.integers(0, 3), st.lists(rules, max_size=3), st.integers(0, 1))
def test_over_cap_agrees(
    conn: psycopg.Connection, sent: list[datetime], reserved: int, caps: list[CapRule], own: int
) -> None:
    own = min(own, reserved)  # the message decided is one of the reservations
    canonical = format_caps(parse_caps(format_caps(caps)))
    expected = over_cap(sent, reserved, NOW, parse_caps(canonical), own=own)
    assert sql_over_cap(conn, sent, reserved, canonical, own) is expected


def test_the_window_rounds_up_to_the_minute_never_down() -> None:
    rule = CapRule(1, 1, "h")
    assert over_cap([NOW - timedelta(minutes=59, seconds=59)], 0, NOW, [rule])
    # Sent in the minute that began 61 minutes ago: counted (a minute longer at most)...
    assert over_cap([NOW - timedelta(minutes=60, seconds=20)], 0, NOW, [rule])
    # ... but not two minutes out.
    assert not over_cap([NOW - timedelta(minutes=61, seconds=31)], 0, NOW, [rule])
    # Reservations (open messages) count for any window; the message's own does not.
    assert over_cap([], 1, NOW, [rule])
    assert not over_cap([], 1, NOW, [rule], own=1)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("2/24h,5/7d", "2/24h,5/7d"),
        (" 5/7d , 2/24h ", "2/24h,5/7d"),
        ("3/90m", "3/90m"),
        ("1/1d,1/1d", "1/1d"),
        ("", ""),
    ],
)
def test_caps_parse_to_one_canonical_form(written: str, canonical: str) -> None:
    assert format_caps(parse_caps(written)) == canonical


@pytest.mark.parametrize("bad", ["2", "2/24", "2/24w", "0/1h", "2/0h", "x/1h", "1/367d", "-1/2h"])
def test_bad_caps_are_refused_with_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match="frequency cap"):
        parse_caps(bad)
