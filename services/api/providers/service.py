"""GET /api/v1/providers: the providers file joined with what the senders report and what
the last hour's messages say.

- State: `provider_state` rows reported within FRESH_S (one per sender replica and
  provider): binds up summed, the worst breaker, the rates summed.
- Outcomes: the messages a provider took whose row changed in the last hour, through
  `ix_message_provider_recent` (migration 0016), by provider, operator code and status: the
  cost grows with the hour's receipts (about 80 ms per 100 000), never with the table. The
  console's Providers page and the delivery-rate gauges read the same query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.mailings.delivery import delivery_rate
from shared.domain.statuses import MessageStatus
from shared.models import Client, Message, ProviderState, ProviderStatus
from shared.provider_state import FRESH_S
from shared.providers import DEFAULT_NAME, ProvidersConfig

WINDOW = timedelta(hours=1)
RECENT = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
BREAKER_ORDER = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class Outcomes:
    awaiting_receipt: int = 0
    delivered: int = 0
    undelivered: int = 0

    def add(self, status: str, count: int) -> None:
        if status == MessageStatus.SENT:
            self.awaiting_receipt += count
        elif status == MessageStatus.DELIVERED:
            self.delivered += count
        elif status == MessageStatus.UNDELIVERED:
            self.undelivered += count

    def as_dict(self) -> dict[str, object]:
        return {
            "awaiting_receipt": self.awaiting_receipt,
            "delivered": self.delivered,
            "undelivered": self.undelivered,
            "delivery_rate": delivery_rate(self.delivered, self.undelivered),
        }


@dataclass
class Recent:
    """The last hour's outcomes of one provider, in all and per operator code."""

    total: Outcomes = field(default_factory=Outcomes)
    by_operator: dict[str, Outcomes] = field(default_factory=dict)


async def recent_outcomes(session: AsyncSession, window: timedelta = WINDOW) -> dict[str, Recent]:
    since = func.now() - window
    rows = await session.execute(
        select(Message.provider, Client.operator_code, Message.status, func.count())
        .join(Client, Client.id == Message.client_id)
        .where(
            Message.updated_at >= since,
            Message.provider.is_not(None),
            Message.status.in_([s.value for s in RECENT]),
        )
        .group_by(Message.provider, Client.operator_code, Message.status)
    )
    recent: dict[str, Recent] = {}
    for provider, code, status, count in rows:
        entry = recent.setdefault(provider or "", Recent())
        entry.total.add(status, int(count))
        entry.by_operator.setdefault(code, Outcomes()).add(status, int(count))
    return recent


async def reported_states(session: AsyncSession) -> dict[str, list[ProviderState]]:
    rows = await session.scalars(
        select(ProviderState).where(
            ProviderState.reported_at >= func.now() - timedelta(seconds=FRESH_S)
        )
    )
    states: dict[str, list[ProviderState]] = {}
    for row in rows:
        states.setdefault(row.provider, []).append(row)
    return states


def state_of(rows: list[ProviderState]) -> dict[str, object]:
    if not rows:
        return {
            "state": "unknown",
            "senders": 0,
            "binds_up": None,
            "binds": None,
            "breaker": None,
            "reason": "",
            "rate": 0.0,
        }
    binds = [r.binds for r in rows if r.binds is not None]
    binds_up = [r.binds_up for r in rows if r.binds_up is not None]
    breaker = max((r.breaker_state for r in rows), key=lambda s: BREAKER_ORDER.get(s, 3))
    taking = sum(1 for r in rows if r.can_take)
    state = "up" if taking == len(rows) else "down" if taking == 0 else "degraded"
    reasons = sorted({r.reason for r in rows if r.reason})
    return {
        "state": state,
        "senders": len(rows),
        "binds_up": sum(binds_up) if binds_up else None,
        "binds": sum(binds) if binds else None,
        "breaker": breaker,
        "reason": "; ".join(reasons)[:500],
        "rate": round(sum(r.rate for r in rows), 2),
    }


async def legacy_states(session: AsyncSession) -> list[ProviderState]:
    """Without PROVIDERS_FILE a sender reports only its breaker, in `provider_status`: read
    as the state of `default`."""
    rows = await session.scalars(
        select(ProviderStatus).where(
            ProviderStatus.reported_at >= func.now() - timedelta(seconds=FRESH_S)
        )
    )
    return [
        ProviderState(
            instance=row.instance,
            provider=DEFAULT_NAME,
            kind="fabrique",
            can_take=row.breaker_state != "open",
            breaker_state=row.breaker_state,
            reason=row.reason,
            rate=0.0,
        )
        for row in rows
    ]


async def providers_overview(
    session: AsyncSession, config: ProvidersConfig
) -> list[dict[str, object]]:
    states = await reported_states(session)
    if config.source == "PROVIDER_URL" and DEFAULT_NAME not in states:
        legacy = await legacy_states(session)
        if legacy:
            states[DEFAULT_NAME] = legacy
    recent = await recent_outcomes(session)
    answer = []
    for name, provider in sorted(config.providers.items()):
        seen = recent.get(name, Recent())
        answer.append(
            {
                "name": name,
                "kind": provider.kind,
                "max_tps": provider.max_tps,
                **state_of(states.get(name, [])),
                "last_hour": seen.total.as_dict(),
                "by_operator": [
                    {"operator_code": code, **outcomes.as_dict()}
                    for code, outcomes in sorted(seen.by_operator.items())
                ],
            }
        )
    return answer
