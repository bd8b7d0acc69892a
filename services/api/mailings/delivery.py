"""What the SMSCs said about a mailing's messages: delivered, undelivered, awaiting a receipt,
per provider and operator code; and the replies its recipients sent (docs/PROVIDERS.md).

The summary comes from the status counters (no scan). The breakdown reads the mailing's
messages past sending (`ix_message_mailing_id_status_id`, or the mailing's partition) and
joins their clients: its cost grows with the mailing (about 70 ms per 100 000 messages), so
the console draws it with the mailing page only, never in a list or the live refresh.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.mailings.schemas import DeliveryGroup, DeliveryOut, ReplyOut
from services.api.mailings.service import get_mailing
from shared.domain.statuses import MessageStatus
from shared.models import Client, Message, MessageReply

RECEIPT_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)


def delivery_rate(delivered: int, undelivered: int) -> float | None:
    """Delivered among the messages a receipt came for; None before the first receipt."""
    receipts = delivered + undelivered
    return round(delivered / receipts, 4) if receipts else None


def summary(counts: dict[str, int]) -> dict[str, object]:
    awaiting = counts.get(MessageStatus.SENT, 0)
    delivered = counts.get(MessageStatus.DELIVERED, 0)
    undelivered = counts.get(MessageStatus.UNDELIVERED, 0)
    return {
        "awaiting_receipt": awaiting,
        "delivered": delivered,
        "undelivered": undelivered,
        "delivery_rate": delivery_rate(delivered, undelivered),
    }


async def by_route(session: AsyncSession, mailing_id: int) -> list[DeliveryGroup]:
    rows = await session.execute(
        select(
            Message.provider,
            Client.operator_code,
            Message.status,
            func.count(),
        )
        .join(Client, Client.id == Message.client_id)
        .where(
            Message.mailing_id == mailing_id,
            Message.status.in_([s.value for s in RECEIPT_STATUSES]),
            Message.is_test.is_(False),
        )
        .group_by(Message.provider, Client.operator_code, Message.status)
    )
    groups: dict[tuple[str, str], dict[str, int]] = {}
    for provider, code, status, count in rows:
        groups.setdefault((provider or "", code), {})[status] = int(count)
    return [
        DeliveryGroup.model_validate({"provider": provider, "operator_code": code} | summary(c))
        for (provider, code), c in sorted(groups.items())
    ]


async def delivery(
    session: AsyncSession, mailing_id: int, counts: dict[str, int], *, groups: bool = True
) -> DeliveryOut:
    return DeliveryOut.model_validate(
        summary(counts) | {"by_route": await by_route(session, mailing_id) if groups else []}
    )


async def list_replies(
    session: AsyncSession, mailing_id: int, *, limit: int, after_id: int
) -> list[ReplyOut]:
    await get_mailing(session, mailing_id)  # 404 for an unknown or deleted mailing
    rows = await session.scalars(
        select(MessageReply)
        .where(MessageReply.mailing_id == mailing_id, MessageReply.id > after_id)
        .order_by(MessageReply.id)
        .limit(limit)
    )
    return [ReplyOut.model_validate(row, from_attributes=True) for row in rows]
