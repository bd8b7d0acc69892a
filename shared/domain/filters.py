"""Which clients a mailing goes to: live (not deleted), not opted out, matching the filter.

Each rule has a Python form and an SQL form built here; tests/db/test_rule_twins.py runs both
on the real database and compares them. The fan-out inserts a message for each client of
`RecipientsSql.conditions`; the pre-send check counts `matching` and the opted-out among them. A
further condition (a frequency cap) is one more entry ANDed into the list.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from shared.domain.opt_out import opted_out_sql


def matches_filter(
    *, operator_code: str, tag: str, operator_codes: Collection[str], tags: Collection[str]
) -> bool:
    """A client matches when it matches both lists; an empty list matches anything."""
    return (not operator_codes or operator_code in operator_codes) and (not tags or tag in tags)


def is_recipient(
    *,
    deleted: bool,
    opted_out: bool,
    operator_code: str,
    tag: str,
    operator_codes: Collection[str],
    tags: Collection[str],
) -> bool:
    """Does a client get a mailing with this filter?"""
    return (
        not deleted
        and not opted_out
        and matches_filter(
            operator_code=operator_code, tag=tag, operator_codes=operator_codes, tags=tags
        )
    )


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


@dataclass(frozen=True, slots=True)
class RecipientsSql:
    """A mailing's recipients as SQL conditions over the client table's alias `client`;
    `codes` and `tags` are SQL expressions of text arrays, None for an empty list."""

    client: str
    codes: str | None = None
    tags: str | None = None

    def matching(self) -> list[str]:
        """Live clients the filter matches (the opted-out among them included)."""
        return [
            f"{self.client}.deleted_at IS NULL",
            *matches_filter_sql(
                operator_code=f"{self.client}.operator_code",
                tag=f"{self.client}.tag",
                codes=self.codes,
                tags=self.tags,
            ),
        ]

    def opted_out(self) -> str:
        return opted_out_sql(self.client)

    def conditions(self) -> list[str]:
        """`is_recipient` as SQL conditions to AND together."""
        return [*self.matching(), f"NOT {self.opted_out()}"]
