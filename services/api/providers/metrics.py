"""Delivery-rate gauges per provider, for the MailingProviderDeliveryRateLow alert
(deploy/k8s/base/prometheusrule.yaml, docs/PROVIDERS.md).

Every api replica refreshes them every REFRESH_S from the last WINDOW's receipts (the
providers API's query, on `ix_message_provider_recent`); the replicas show the same values,
so the alert takes `max by (provider)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import timedelta

import structlog
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.providers.service import recent_outcomes

log = structlog.get_logger("api.providers")

WINDOW = timedelta(minutes=15)
REFRESH_S = 30.0

RECEIPTS = Gauge(
    "mailing_provider_receipts_recent",
    "Messages a provider took that got a receipt (or await one) in the last 15 minutes",
    ["provider", "outcome"],
)
DELIVERY_RATIO = Gauge(
    "mailing_provider_delivery_ratio",
    "delivered / (delivered + undelivered) over the last 15 minutes' receipts, per provider",
    ["provider"],
)


_shown: set[str] = set()  # providers with gauges: one gone quiet drops to 0 / no ratio


async def refresh(session: AsyncSession, configured: Iterable[str] = ()) -> None:
    """Set the gauges from the last WINDOW; every configured provider gets its receipt
    gauges (0 without messages), the ratio only once it has receipts."""
    recent = await recent_outcomes(session, WINDOW)
    _shown.update(configured)
    for name in _shown - set(recent):
        for outcome in ("delivered", "undelivered", "awaiting_receipt"):
            RECEIPTS.labels(name, outcome).set(0)
        _drop_ratio(name)
    for name, entry in recent.items():
        _shown.add(name)
        RECEIPTS.labels(name, "delivered").set(entry.total.delivered)
        RECEIPTS.labels(name, "undelivered").set(entry.total.undelivered)
        RECEIPTS.labels(name, "awaiting_receipt").set(entry.total.awaiting_receipt)
        receipts = entry.total.delivered + entry.total.undelivered
        if receipts:
            DELIVERY_RATIO.labels(name).set(entry.total.delivered / receipts)
        else:
            _drop_ratio(name)


def _drop_ratio(name: str) -> None:
    try:
        DELIVERY_RATIO.remove(name)
    except KeyError:
        pass  # it had none


async def keep_fresh(
    sessions: async_sessionmaker[AsyncSession],
    configured: Callable[[], Iterable[str]],
    every_s: float = REFRESH_S,
) -> None:
    """A task of the api: refresh now and every `every_s` until cancelled."""
    while True:
        try:
            async with sessions() as session:
                await refresh(session, configured())
        except Exception as exc:
            log.warning("could not refresh the delivery gauges", error=str(exc)[:200])
        await asyncio.sleep(every_s)
