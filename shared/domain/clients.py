"""Rules for the client directory: phone numbers, operator codes, time zones."""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

PHONE_RE = re.compile(r"^7[0-9]{10}$")
OPERATOR_CODE_RE = re.compile(r"^[0-9]{3}$")


def is_valid_phone(phone: str) -> bool:
    """A phone is `7` followed by ten ASCII digits."""
    return PHONE_RE.fullmatch(phone) is not None


def is_valid_operator_code(code: str) -> bool:
    return OPERATOR_CODE_RE.fullmatch(code) is not None


def default_operator_code(phone: str) -> str:
    """The operator code is the three digits after the country code: 7 (912) 345-67-89."""
    return phone[1:4]


@lru_cache(maxsize=1)
def _known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_valid_timezone(name: str) -> bool:
    """An IANA zone name known to both Python and PostgreSQL (which ship the same tz database)."""
    if name not in _known_timezones():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def mask_phone(phone: str) -> str:
    """For logs: keep the operator code and the last two digits."""
    return phone[:4] + "*****" + phone[-2:] if len(phone) == 11 else "***"


# The rules a client's fields must keep, for one client (POST /clients) and a million (the CSV
# import). `client_problem` is the Python form; `client_problem_sql` derives the SQL form the
# import runs over its staging table from the same patterns, limits and messages; a test on the
# real database (tests/db/test_client_rules_sql.py) holds the two together.
MAX_TAG_LENGTH = 100
PHONE_MESSAGE = "phone must be 7 followed by 10 digits, e.g. 79123456789"
OPERATOR_CODE_MESSAGE = "operator_code must be exactly 3 digits, e.g. 912"
TAG_MESSAGE = f"tag must be at most {MAX_TAG_LENGTH} characters"
TIMEZONE_MESSAGE = "timezone must be an IANA time zone name, e.g. Europe/Moscow"
NUL_MESSAGE = "must not contain NUL characters"


def client_problem(
    *, phone: str | None, operator_code: str | None, tag: str, timezone: str | None
) -> tuple[str, str] | None:
    """The first rule the fields break as (field, message), or None; `operator_code` None means
    "derive it from the phone"."""
    if phone is None or not is_valid_phone(phone):
        return "phone", PHONE_MESSAGE
    if operator_code is not None and not is_valid_operator_code(operator_code):
        return "operator_code", OPERATOR_CODE_MESSAGE
    if len(tag) > MAX_TAG_LENGTH:
        return "tag", TAG_MESSAGE
    if timezone is None or not is_valid_timezone(timezone):
        return "timezone", TIMEZONE_MESSAGE
    return None


def known_timezones() -> list[str]:
    """The zone names `is_valid_timezone` accepts, for the SQL form (a bind parameter)."""
    return sorted(name for name in _known_timezones() if is_valid_timezone(name))


def _sql_regex(pattern: re.Pattern[str]) -> str:
    # Both patterns are anchored ASCII classes: POSIX and Python regexes read them alike.
    return "'" + pattern.pattern.replace("'", "''") + "'"


def client_problem_sql(
    *, phone: str, operator_code: str, tag: str, timezone: str, zones: str
) -> tuple[str, str]:
    """SQL expressions (field, message) for `client_problem` over column expressions; `zones`
    is a text[] expression holding `known_timezones()`. Both are NULL for a valid row."""
    checks = [
        (f"NOT coalesce({phone} ~ {_sql_regex(PHONE_RE)}, false)", "phone", PHONE_MESSAGE),
        (
            f"{operator_code} IS NOT NULL AND {operator_code} !~ {_sql_regex(OPERATOR_CODE_RE)}",
            "operator_code",
            OPERATOR_CODE_MESSAGE,
        ),
        (f"char_length({tag}) > {MAX_TAG_LENGTH}", "tag", TAG_MESSAGE),
        (f"NOT coalesce({timezone} = ANY({zones}), false)", "timezone", TIMEZONE_MESSAGE),
    ]
    field = "CASE " + " ".join(f"WHEN {cond} THEN '{name}'" for cond, name, _ in checks) + " END"
    message = "CASE " + " ".join(f"WHEN {cond} THEN '{msg}'" for cond, _, msg in checks) + " END"
    return field, message


# Phones as people write them (the import, the console's form, and the REST API when asked
# with `normalize_phone=true`): `+7 (916) 123-45-67`, `8 916 123 45 67`, `89161234567` all
# become 79161234567. Separators go; then `+7` or a leading 7 or 8 (the Russian trunk prefix)
# with ten digits is a phone, and anything else stays refused with the reason.
PHONE_SEPARATORS = " \t\u00a0()-."
_SEPARATORS_CLASS = "[" + PHONE_SEPARATORS.replace("-", "") + "-]"
_WRITTEN_FORMS = (
    (re.compile(r"^[+]7[0-9]{10}$"), 2),  # +7 9161234567: the digits after "+7"
    (re.compile(r"^[78][0-9]{10}$"), 1),  # 8 9161234567 or 7 9161234567: after the first
)
# Why a phone that cannot be normalised is refused, in order: (pattern over the stripped text,
# whether the reason holds when it matches or when it does not, reason); else PHONE_UNCLEAR.
_PHONE_REASONS = (
    (re.compile(r"^$"), True, "phone is empty"),
    (
        re.compile(r"^[+]?[0-9]*$"),
        False,
        "phone may hold only digits, spaces, brackets, dashes, dots and a leading +",
    ),
    (re.compile(r"^[+][0-9]*$"), True, "a phone with + must be +7 followed by 10 digits"),
    (
        re.compile(r"^[0-69][0-9]{9}$"),
        True,
        "10 digits without a country code are ambiguous: write 7 or 8 in front",
    ),
)
PHONE_UNCLEAR = "phone must be 7 or 8 followed by 10 digits, e.g. 8 912 345-67-89"


def valid_phone_sql(phone: str) -> str:
    """`is_valid_phone` in SQL over a text expression (NULL for NULL)."""
    return f"{phone} ~ {_sql_regex(PHONE_RE)}"


def _strip_separators(written: str) -> str:
    return re.sub(_SEPARATORS_CLASS, "", written)


def normalize_phone(written: str) -> str | None:
    """The phone `written` means, as 7 followed by ten digits, or None when it means none."""
    stripped = _strip_separators(written)
    for pattern, skip in _WRITTEN_FORMS:
        if pattern.fullmatch(stripped):
            return "7" + stripped[skip:]
    return None


def phone_refusal(written: str) -> str:
    """Why `normalize_phone(written)` is None (meaningful only then)."""
    stripped = _strip_separators(written)
    for pattern, when_matching, reason in _PHONE_REASONS:
        if (pattern.fullmatch(stripped) is not None) is when_matching:
            return reason
    return PHONE_UNCLEAR


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def normalize_phone_sql(written: str) -> str:
    """`normalize_phone` in SQL over a text expression: the phone, or NULL."""
    stripped = f"regexp_replace({written}, {_sql_text(_SEPARATORS_CLASS)}, '', 'g')"
    cases = " ".join(
        f"WHEN {stripped} ~ {_sql_regex(pattern)} THEN '7' || substr({stripped}, {skip + 1})"
        for pattern, skip in _WRITTEN_FORMS
    )
    return f"(CASE {cases} END)"


def phone_refusal_sql(written: str) -> str:
    """`phone_refusal` in SQL over a text expression."""
    stripped = f"regexp_replace({written}, {_sql_text(_SEPARATORS_CLASS)}, '', 'g')"
    cases = " ".join(
        f"WHEN {stripped} {'~' if when_matching else '!~'} {_sql_regex(pattern)}"
        f" THEN {_sql_text(reason)}"
        for pattern, when_matching, reason in _PHONE_REASONS
    )
    return f"(CASE {cases} ELSE {_sql_text(PHONE_UNCLEAR)} END)"


def default_operator_code_sql(phone: str) -> str:
    """`default_operator_code` in SQL."""
    return f"substr({phone}, 2, 3)"


# How a CSV import writes `opted_out`: these mean yes or no; empty leaves an existing client's
# opt-out as it is (a new client is not opted out).
OPTED_OUT_YES = ("true", "1", "yes")
OPTED_OUT_NO = ("false", "0", "no")
OPTED_OUT_MESSAGE = "opted_out must be true or false (or 1/0, yes/no), or empty to leave it as is"
