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
