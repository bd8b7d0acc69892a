"""What a sender reports of each provider for GET /api/v1/providers: can it take messages,
its breaker and the rate it sends there (from the accepted-messages counter)."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import SecretStr

from services.sender.breaker import Breaker
from services.sender.provider_report import Reporter
from services.sender.routing import Slot
from shared import metrics
from shared.providers import KannelProvider


def kannel(name: str) -> KannelProvider:
    return KannelProvider(
        name=name,
        url="http://127.0.0.1:13013/cgi-bin/sendsms",
        username="mailing",
        password=SecretStr("kannel-password-value"),
        source_addr="MAILING",
        callback_base_url="http://127.0.0.1:8000",
        callback_secret=SecretStr("callback-secret-value"),
    )


def test_rate_breaker_and_no_secret() -> None:
    good = Slot(kannel("report-good"), Breaker(threshold=2, cooldown_s=60, max_cooldown_s=60), None)
    failing = Slot(
        kannel("report-failing"), Breaker(threshold=2, cooldown_s=60, max_cooldown_s=60), None
    )
    failing.breaker.open("provider failing")
    reporter = Reporter(SimpleNamespace(slots={"a": good, "b": failing}))  # type: ignore[arg-type]

    first = {r.provider: r for r in reporter.reports(now=100.0)}
    assert first["report-good"].rate == 0.0  # no earlier count to compare with
    metrics.PROVIDER_MESSAGES.labels("report-good", "accepted").inc(10)
    second = {r.provider: r for r in reporter.reports(now=102.0)}

    assert second["report-good"].rate == 5.0
    assert second["report-good"].can_take is True
    assert second["report-good"].breaker_state == "closed"
    assert second["report-good"].binds is None  # kannel has no binds
    assert second["report-failing"].can_take is False
    assert second["report-failing"].breaker_state == "open"
    assert second["report-failing"].reason == "provider failing"
    assert "secret" not in repr(second) and "password" not in repr(second)
