"""Which clients a mailing goes to."""

from __future__ import annotations

from collections.abc import Collection


def matches_filter(
    *, operator_code: str, tag: str, operator_codes: Collection[str], tags: Collection[str]
) -> bool:
    """A client matches when it matches both lists; an empty list matches anything.

    The fan-out applies the same rule in SQL (`scheduler.fanout`); a test holds the two together.
    """
    return (not operator_codes or operator_code in operator_codes) and (not tags or tag in tags)
