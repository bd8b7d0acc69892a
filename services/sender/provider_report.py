"""Each provider's state as this sender sees it, in `provider_state` (migration 0016), for
GET /api/v1/providers and the console's Providers page (docs/PROVIDERS.md).

Every REPORT_EVERY_S the router's slots are written as one upsert: whether the provider can
take messages here, its binds (smpp), its breaker and the rate this replica sends there (the
accepted messages counted by `mailing_provider_messages_total`, or for the one fabrique
provider `mailing_provider_requests_total{outcome="sent"}`, since the last report). A failed
write costs a log line; the api ignores rows older than 30 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from prometheus_client import REGISTRY

from services.sender import status_report
from shared.provider_state import ProviderReport, report_provider_states

if TYPE_CHECKING:
    from services.sender.routing import Router, Slot

log = structlog.get_logger("sender.provider_report")

REPORT_EVERY_S = 5.0


def _sent_so_far(slot: Slot, only_fabrique: bool) -> float:
    if slot.provider.kind == "fabrique":
        if not only_fabrique:
            return 0.0  # its client's counter has no provider label
        labels = {"outcome": "sent"}
        return REGISTRY.get_sample_value("mailing_provider_requests_total", labels) or 0.0
    labels = {"provider": slot.name, "outcome": "accepted"}
    return REGISTRY.get_sample_value("mailing_provider_messages_total", labels) or 0.0


class Reporter:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.last: dict[str, tuple[float, float]] = {}  # name -> (count, monotonic time)

    def reports(self, now: float | None = None) -> list[ProviderReport]:
        now = time.monotonic() if now is None else now
        slots = list(self.router.slots.values())
        only_fabrique = sum(1 for s in slots if s.provider.kind == "fabrique") == 1
        reports = []
        for slot in slots:
            count = _sent_so_far(slot, only_fabrique)
            before = self.last.get(slot.name)
            self.last[slot.name] = (count, now)
            rate = 0.0
            if before is not None and now > before[1]:
                rate = max(0.0, count - before[0]) / (now - before[1])
            smpp_state = slot.smpp.state if slot.smpp is not None else {}
            breaker = slot.breaker.state.name.lower()
            reason = str(smpp_state.get("bind_error") or "")
            if not reason and breaker != "closed":
                reason = slot.breaker.reason
            reports.append(
                ProviderReport(
                    provider=slot.name,
                    kind=slot.provider.kind,
                    can_take=slot.can_take(),
                    binds_up=smpp_state.get("binds_up"),
                    binds=smpp_state.get("binds"),
                    breaker_state=breaker,
                    reason=reason,
                    rate=round(rate, 2),
                )
            )
        return reports

    async def run(self, every_s: float = REPORT_EVERY_S) -> None:
        while True:
            try:
                async with self.router.sessions() as session:
                    await report_provider_states(session, status_report.INSTANCE, self.reports())
            except Exception as exc:
                log.warning("could not report the providers' state", error=str(exc)[:200])
            await asyncio.sleep(every_s)
