"""Which clients a mailing goes to."""

from __future__ import annotations

from collections.abc import Collection


def matches_filter(
    *, operator_code: str, tag: str, operator_codes: Collection[str], tags: Collection[str]
) -> bool:
    """A client matches when it matches both lists; an empty list matches anything.

    The fan-out applies the same rule in SQL (`matches_filter_sql`); tests/db/test_rule_twins.py
    runs both on the real database and compares them.
    """
    return (not operator_codes or operator_code in operator_codes) and (not tags or tag in tags)


def matches_filter_sql(
    *, operator_code: str, tag: str, codes: str | None, tags: str | None
) -> list[str]:
    """`matches_filter` as SQL conditions to AND together (arguments are SQL expressions; None
    stands for an empty list). An empty list matches anyone, so its condition is left out
    rather than passed as a parameter: the planner then sees the real predicate."""
    conditions = []
    if codes is not None:
        conditions.append(f"{operator_code} = ANY({codes})")
    if tags is not None:
        conditions.append(f"{tag} = ANY({tags})")
    return conditions
