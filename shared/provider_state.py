"""Each sender replica's view of each provider, in `provider_state` (migration 0016).

The sender calls `report_provider_states()` every few seconds (and on a change) with one
`ProviderReport` per provider it knows: whether it can take messages, its binds (smpp), its
breaker and the rate it sends there. `GET /api/v1/providers` and the console read the rows
reported within `FRESH_S`; a replica that dies stops reporting and drops out of the sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import ProviderState

FRESH_S = 30.0  # rows older than this are a dead or stuck replica's


@dataclass(frozen=True, slots=True)
class ProviderReport:
    provider: str
    kind: str
    can_take: bool
    binds_up: int | None = None
    binds: int | None = None
    breaker_state: str = "closed"  # closed | half_open | open
    reason: str = ""  # a bind error or the breaker's reason; never a secret
    rate: float = 0.0  # messages per second this replica sends to the provider


async def report_provider_states(
    session: AsyncSession, instance: str, reports: Sequence[ProviderReport]
) -> None:
    """Upsert this replica's rows (one statement, key order) and commit."""
    if not reports:
        return
    rows = [
        {
            "instance": instance,
            "provider": r.provider,
            "kind": r.kind,
            "can_take": r.can_take,
            "binds_up": r.binds_up,
            "binds": r.binds,
            "breaker_state": r.breaker_state,
            "reason": r.reason[:500],
            "rate": r.rate,
        }
        for r in sorted(reports, key=lambda r: r.provider)
    ]
    statement = insert(ProviderState).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=["instance", "provider"],
        set_={
            name: statement.excluded[name]
            for name in ("kind", "can_take", "binds_up", "binds", "breaker_state", "reason", "rate")
        }
        | {"reported_at": func.now()},
    )
    await session.execute(statement)
    await session.commit()
