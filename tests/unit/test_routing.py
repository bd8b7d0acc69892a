"""services.sender.routing: what each SMPP / Kannel answer makes of a message, and the order
a route's providers are tried in."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.sender import outcome
from services.sender.breaker import Breaker, State
from services.sender.routing import Router, Slot
from services.sender.smpp import SubmitOutcome, SubmitResult
from services.sender.store import Claimed
from shared.domain.statuses import MessageStatus
from shared.providers import ProvidersSource, SmppProvider
from shared.settings import SenderSettings

S = MessageStatus
Out = SubmitOutcome
POLICY = outcome.Policy(
    margin_s=2.0, lease_s=22.0, timeout_s=10.0, max_attempts=20, retry_delays_s=(1.0, 2.0)
)


def claimed(attempts: int = 0) -> Claimed:
    return Claimed(
        7, 3, S.SENDING, 1, 11, attempts, "79001234567", "hi", 3600.0, time.monotonic(),
        operator_code="900",
    )  # fmt: skip


def slot(name: str = "agg") -> Slot:
    provider = SmppProvider(
        name=name,
        host="127.0.0.1",
        port=2775,
        system_id="x",
        password=SecretStr("y"),
        source_addr="MAILING",
    )
    return Slot(provider, Breaker(threshold=2, cooldown_s=1, max_cooldown_s=4), None)


@pytest.fixture
def router(tmp_path: Path) -> Router:
    path = tmp_path / "providers.yaml"
    path.write_text(
        """
providers:
  - {name: a, kind: fabrique, url: "http://127.0.0.1:1"}
  - {name: b, kind: fabrique, url: "http://127.0.0.1:2"}
routes:
  - operators: ["900"]
    via: [a, b]
  - operators: ["901"]
    via: best [a, b]
"""
    )
    settings = SenderSettings(providers_file=path)
    return Router(settings, ProvidersSource(path), None, rng=random.Random(1))  # type: ignore[arg-type]


def test_accepted_is_sent_with_the_first_parts_id(router: Router) -> None:
    answer = SubmitResult(Out.ACCEPTED, ("id-1", "id-2"), parts=2)
    result = router._after_submit(slot(), claimed(), answer, POLICY)
    assert result is not None
    assert (result.status, result.provider, result.provider_message_id) == (S.SENT, "agg", "id-1")


def test_permanent_fails_with_the_error_code(router: Router) -> None:
    answer = SubmitResult(Out.PERMANENT, error="ESME_RINVDSTADR", command_status=11)
    result = router._after_submit(slot(), claimed(), answer, POLICY)
    assert result is not None
    assert (result.status, result.error) == (S.FAILED, "ESME_RINVDSTADR")


def test_throttled_retries_soon_without_counting_against_the_provider(router: Router) -> None:
    s = slot()
    answer = SubmitResult(Out.THROTTLED, error="ESME_RTHROTTLED", retry_after_s=0.2)
    result = router._after_submit(s, claimed(), answer, POLICY)
    assert result is not None and result.status is S.RETRYING
    assert result.attempted == 0  # slowing down is not a failed attempt
    assert s.breaker.failures == 0


def test_unknown_and_transient_retry_and_feed_the_breaker(router: Router) -> None:
    s = slot()
    for kind in (Out.UNKNOWN, Out.TRANSIENT):
        result = router._after_submit(s, claimed(), SubmitResult(kind, error="x"), POLICY)
        assert result is not None and result.status is S.RETRYING
    assert s.breaker.state is State.OPEN  # threshold 2


def test_unavailable_goes_to_the_next_provider_and_expired_expires(router: Router) -> None:
    assert router._after_submit(slot(), claimed(), SubmitResult(Out.UNAVAILABLE), POLICY) is None
    result = router._after_submit(slot(), claimed(), SubmitResult(Out.EXPIRED), POLICY)
    assert result is not None and result.status is S.EXPIRED and result.attempted == 0


def test_route_order_and_failover_order(router: Router) -> None:
    router.configure(router.source.current)
    slots, ranked = router.order(router.source.current, "900")
    assert [s.name for s in slots] == ["a", "b"] and not ranked
    assert router.order(router.source.current, "999") == ([], False)  # no route: it waits
    # A best route: the provider with the better delivered rate first.
    for _ in range(20):
        router.rates.record("b", "901", delivered=True)
        router.rates.record("a", "901", delivered=False)
    firsts = [router.order(router.source.current, "901")[0][0].name for _ in range(200)]
    assert firsts.count("b") > 170 and firsts.count("a") > 0  # a scouting share for a
