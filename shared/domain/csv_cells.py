"""CSV cells a spreadsheet would run as a formula (OWASP's rule: a cell beginning with `=`, `+`,
`-`, `@`, tab or carriage return) are written with a leading `'`, and the import takes it off
again, so an export re-imports to the same values.

The rule is a bijection: a cell is quoted when it is any number of `'` followed by a trigger
character, and the import unquotes exactly those (a genuine `'=x` goes out as `''=x`). Phones,
numbers and times never begin so: they are written as they are.
"""

from __future__ import annotations

import re

from psycopg import sql

_NEEDS_QUOTE = re.compile(r"'*[=+\-@\t\r]")
_QUOTED = re.compile(r"'+[=+\-@\t\r]")
# The same pattern for PostgreSQL (an ARE: \t and \r are escapes inside the brackets too).
_NEEDS_QUOTE_SQL = r"^'*[=+@\t\r-]"


def neutralise(cell: str) -> str:
    """The cell as we write it into a CSV."""
    return "'" + cell if _NEEDS_QUOTE.match(cell) else cell


def restore(cell: str) -> str:
    """A cell of a CSV we wrote, as it was before `neutralise` (others pass unchanged)."""
    return cell[1:] if _QUOTED.match(cell) else cell


def neutralise_sql(column: str) -> sql.Composable:
    """`neutralise` of a text column in a query, named after the column."""
    identifier = sql.Identifier(*column.split("."))
    return sql.SQL(
        "CASE WHEN {col} ~ {pattern} THEN '''' || {col} ELSE {col} END AS {name}"
    ).format(
        col=identifier,
        pattern=sql.Literal(_NEEDS_QUOTE_SQL),
        name=sql.Identifier(column.split(".")[-1]),
    )
