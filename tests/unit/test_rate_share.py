"""max_tps across replicas: shares from demands (water-filling) and the token bucket."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.rate import TokenBucket
from shared.domain.rate_share import shares


def test_even_split_when_all_want_more() -> None:
    assert shares(100, {"a": 500, "b": 500}) == {"a": 50, "b": 50}


def test_what_one_leaves_goes_to_the_others() -> None:
    got = shares(100, {"a": 10, "b": 500, "c": 500})
    assert got == {"a": 10, "b": 45, "c": 45}


def test_idle_replicas_keep_a_floor() -> None:
    got = shares(100, {"idle": 0, "busy": 1000})
    assert got["idle"] == pytest.approx(2.5)  # 5 % of an even split
    assert got["busy"] == pytest.approx(97.5)


def test_a_dead_replica_is_simply_not_there() -> None:
    assert shares(100, {"a": 500}) == {"a": 100}
    assert shares(100, {}) == {}


@given(
    st.floats(1, 10_000),
    st.dictionaries(st.text(min_size=1, max_size=3), st.floats(0, 1e6), min_size=1, max_size=8),
)
def test_shares_never_exceed_max_tps_nor_a_busy_replicas_demand(
    max_tps: float, demands: dict[str, float]
) -> None:
    got = shares(max_tps, demands)
    assert set(got) == set(demands)
    assert sum(got.values()) <= max_tps * (1 + 1e-9)
    floor = max_tps / len(demands) * 0.05
    for name, demand in demands.items():
        assert got[name] <= max(demand, floor) * (1 + 1e-9)
    # Work-conserving: if anyone is held below their demand, the whole rate is handed out.
    if any(got[n] < max(d, floor) * (1 - 1e-9) for n, d in demands.items()):
        assert sum(got.values()) == pytest.approx(max_tps)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_bucket_paces_to_its_rate_with_a_tenth_second_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(100, clock=clock)
    sent_at = []
    for _ in range(300):
        await bucket.acquire()
        sent_at.append(clock.now)
    # Any one-second window holds at most the rate plus 10 %.
    for start in sent_at:
        assert sum(start <= t < start + 1 for t in sent_at) <= 110
    assert sent_at[-1] == pytest.approx(2.90)  # message 300 at 299/100 s, less the burst
    bucket.rate = 10  # a smaller share: the next messages are 0.1 s apart
    await bucket.acquire()
    before = clock.now
    await bucket.acquire()
    assert clock.now - before == pytest.approx(0.1)
    with pytest.raises(ValueError, match="above 0"):
        bucket.rate = 0


async def test_a_long_text_beyond_the_burst_leaves_the_bucket_in_debt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(10, clock=clock)
    await bucket.acquire(5)  # five parts at once
    start = clock.now
    await bucket.acquire()
    assert clock.now - start == pytest.approx(0.5)  # they took 0.5 s of the rate
