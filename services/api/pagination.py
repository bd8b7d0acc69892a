from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (at most 1000)")]
AfterId = Annotated[
    int, Query(ge=0, le=2**63 - 1, description="Return items with an id above this (keyset)")
]


def next_after_id(ids: list[int], limit: int) -> int | None:
    """A full page may have a successor; its last id is where the next page starts."""
    return ids[-1] if len(ids) == limit else None


ResourceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The resource's id")]
