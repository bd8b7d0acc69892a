"""`via: best [...]`: the better provider gets the traffic, the other a scouting share, and a
provider whose delivered rate collapses loses the traffic within a minute (simulated clock)."""

from __future__ import annotations

import random

import pytest

from shared.domain.best_route import DeliveryRates, choose, rank


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(
    seconds: float,
    quality: dict[str, float],
    rates: DeliveryRates,
    clock: Clock,
    rng: random.Random,
    per_second: int = 20,
) -> list[str]:
    """Send `per_second` messages a second to operator 900 for `seconds`; each provider
    delivers with its `quality`; receipts come at once. The chosen providers, in order."""
    chosen = []
    for _ in range(int(seconds)):
        clock.now += 1.0
        for _ in range(per_second):
            provider = choose(["a", "b"], "900", rates, rng=rng)[0]
            chosen.append(provider)
            rates.record(provider, "900", delivered=rng.random() < quality[provider])
    return chosen


def test_the_better_provider_gets_the_traffic_and_a_collapse_moves_it_within_a_minute() -> None:
    clock, rng = Clock(), random.Random(19)
    rates = DeliveryRates(half_life_s=60.0, clock=clock)
    warm = run(300, {"a": 0.95, "b": 0.75}, rates, clock, rng)
    last = warm[-1200:]
    assert last.count("a") / len(last) > 0.9
    assert last.count("b") > 0  # still scouted
    # a collapses: within a minute b has the traffic.
    after = run(60, {"a": 0.05, "b": 0.75}, rates, clock, rng)
    assert after[-200:].count("b") / 200 > 0.9
    assert rank(["a", "b"], "900", rates) == ["b", "a"]
    # a recovers: the scouting share notices, and it wins the traffic back.
    back = run(600, {"a": 0.95, "b": 0.75}, rates, clock, rng)
    assert back[-1200:].count("a") / 1200 > 0.9


def test_operator_codes_are_ranked_apart() -> None:
    clock = Clock()
    rates = DeliveryRates(clock=clock)
    for _ in range(50):
        rates.record("a", "900", delivered=True)
        rates.record("b", "900", delivered=False)
        rates.record("a", "901", delivered=False)
        rates.record("b", "901", delivered=True)
    assert rank(["a", "b"], "900", rates) == ["a", "b"]
    assert rank(["a", "b"], "901", rates) == ["b", "a"]


def test_without_evidence_the_route_order_holds_and_rates_are_even() -> None:
    rates = DeliveryRates(clock=Clock())
    assert rates.rate("a", "900") == 0.5 and rates.evidence("a", "900") == 0
    assert rank(["b", "a"], "900", rates) == ["b", "a"]
    assert choose(["b", "a"], "900", rates, explore=0) == ["b", "a"]
    assert choose(["only"], "900", rates) == ["only"]


def test_evidence_decays_by_half_life() -> None:
    clock = Clock()
    rates = DeliveryRates(half_life_s=10.0, clock=clock)
    rates.record("a", "900", delivered=True, count=100)
    clock.now = 10.0
    assert rates.evidence("a", "900") == pytest.approx(50.0)
    clock.now = 30.0
    assert rates.evidence("a", "900") == pytest.approx(12.5)


def test_exploration_share() -> None:
    rates = DeliveryRates(clock=Clock())
    rates.record("a", "900", delivered=True, count=100)
    rng = random.Random(7)
    firsts = [choose(["a", "b", "c"], "900", rates, explore=0.1, rng=rng)[0] for _ in range(10_000)]
    assert 0.08 < (len(firsts) - firsts.count("a")) / len(firsts) < 0.12
    assert firsts.count("b") > 300 and firsts.count("c") > 300


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        DeliveryRates(half_life_s=0)
