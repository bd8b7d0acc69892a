"""The client rules in Python (POST /clients) and in SQL (the CSV import) agree: hypothesis
draws field values, the real database evaluates `client_problem_sql` on them."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.clients import (
    client_problem,
    client_problem_sql,
    default_operator_code,
    default_operator_code_sql,
    is_valid_phone,
    known_timezones,
    normalize_phone,
    normalize_phone_sql,
    phone_refusal,
    phone_refusal_sql,
)
from tests.support import database

FIELD, REASON = client_problem_sql(
    phone="%(phone)s::text",
    operator_code="%(code)s::text",
    tag="%(tag)s::text",
    timezone="%(tz)s::text",
    zones="%(zones)s::text[]",
)
ZONES = known_timezones()

# Text PostgreSQL can hold (no NUL, no lone surrogates; the CSV reader refuses NUL itself).
pg_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
digits = st.text(alphabet="0123456789", max_size=12)
near_phones = st.one_of(
    digits.map(lambda d: "7" + d),
    st.builds(lambda d, s: "7" + d + s, digits, st.sampled_from(["\n", " ", "a", "٣", "９"])),
    pg_text,
)
near_codes = st.one_of(st.none(), digits, pg_text)
tags = st.one_of(st.text(max_size=3).map(lambda t: t * 40), pg_text).map(
    lambda t: t.replace("\x00", "")
)
zones = st.one_of(
    st.sampled_from(ZONES),
    st.sampled_from(ZONES).map(str.lower),
    st.sampled_from(ZONES).map(lambda z: z + " "),
    st.sampled_from(["", "UTC", "Etc/GMT+3", "Europe/Moskva", "posixrules", "Factory", "local"]),
    pg_text,
)


@pytest.fixture(scope="module")
def conn(db_name: str) -> Iterator[psycopg.Connection]:
    with database.connect(db_name) as connection:
        yield connection


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(phone=near_phones, code=near_codes, tag=tags, tz=zones)
def test_python_and_sql_rules_agree(
    conn: psycopg.Connection, phone: str, code: str | None, tag: str, tz: str
) -> None:
    row = conn.execute(
        f"SELECT {FIELD}, {REASON}, {default_operator_code_sql('%(phone)s::text')}",
        {"phone": phone, "code": code, "tag": tag, "tz": tz, "zones": ZONES},
    ).fetchone()
    assert row is not None
    expected = client_problem(phone=phone, operator_code=code, tag=tag, timezone=tz)
    assert (row[0], row[1]) == (expected or (None, None))
    if expected is None:
        assert row[2] == default_operator_code(phone)


def test_every_zone_python_accepts_is_known_to_postgresql(conn: psycopg.Connection) -> None:
    """The send-window rules run `AT TIME ZONE` on the client's zone in the database."""
    known = {r[0] for r in conn.execute("SELECT name FROM pg_timezone_names")}
    missing = [zone for zone in ZONES if zone not in known]
    assert missing == []


written_phones = st.one_of(
    st.text(alphabet="0123456789 +()-.\t\u00a0", max_size=20),
    st.builds(
        lambda lead, d, sep: lead + sep.join([d[:3], d[3:6], d[6:8], d[8:]]),
        st.sampled_from(["+7", "8", "7", "+8", "", "+", "007"]),
        st.text(alphabet="0123456789", min_size=9, max_size=11),
        st.sampled_from([" ", "-", ") ", ".", "", "\u00a0", "\n", "٣"]),
    ),
    pg_text,
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(written=written_phones)
def test_phone_normalisation_agrees(conn: psycopg.Connection, written: str) -> None:
    row = conn.execute(
        f"SELECT {normalize_phone_sql('%(p)s::text')}, {phone_refusal_sql('%(p)s::text')}",
        {"p": written},
    ).fetchone()
    assert row is not None
    phone = normalize_phone(written)
    assert row[0] == phone
    if phone is None:
        assert row[1] == phone_refusal(written)
    else:
        assert is_valid_phone(phone)


@pytest.mark.parametrize(
    ("written", "phone"),
    [
        ("+7 (916) 123-45-67", "79161234567"),
        ("8 916 123 45 67", "79161234567"),
        ("89161234567", "79161234567"),
        ("79161234567", "79161234567"),
        ("8(916)123.45.67", "79161234567"),
    ],
)
def test_phones_as_people_write_them(written: str, phone: str) -> None:
    assert normalize_phone(written) == phone


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("9161234567", "10 digits without a country code are ambiguous"),
        ("+8 916 123 45 67", "a phone with + must be +7"),
        ("+44 20 7946 0958", "a phone with + must be +7"),
        ("8 916 123 45 6", "phone must be 7 or 8 followed by 10 digits"),
        ("7 916 123 45 67 1", "phone must be 7 or 8 followed by 10 digits"),
        ("8-916-CALL-NOW", "phone may hold only digits"),
        ("", "phone is empty"),
    ],
)
def test_ambiguous_phones_are_refused_with_the_reason(written: str, reason: str) -> None:
    assert normalize_phone(written) is None
    assert phone_refusal(written).startswith(reason)
