"""`via: best [a, b]`: per operator code, the provider with the best delivered rate over its
recent receipts gets the traffic; a small share still goes to the others so that a recovered
provider is noticed; a provider whose rate collapses loses the traffic within a minute.

Receipts are counted with exponential decay (half-life `half_life_s`, 60 s by default), so old
evidence fades: after a collapse from 95 % to nothing, a provider's measured rate halves every
half-life and falls under a 70 % competitor within about half a minute at a steady flow. The
rate is the posterior mean with one delivered and one undelivered receipt of prior, so a
provider with no receipts yet counts as 50 % and gets only the exploration share until it
proves better. Pure: the clock and the random source are injected (docs/PROVIDERS.md).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_HALF_LIFE_S = 60.0
DEFAULT_EXPLORE = 0.05  # the share of messages that goes to a provider other than the best


@dataclass(slots=True)
class _Decayed:
    delivered: float = 0.0
    undelivered: float = 0.0
    at: float = 0.0


class DeliveryRates:
    """Decayed delivered / undelivered receipt counts per (provider, operator code)."""

    def __init__(
        self,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be above 0")
        self._lambda = math.log(2) / half_life_s
        self._clock = clock
        self._counts: dict[tuple[str, str], _Decayed] = {}

    def _decayed(self, key: tuple[str, str], now: float) -> _Decayed:
        entry = self._counts.get(key)
        if entry is None:
            entry = self._counts[key] = _Decayed(at=now)
        elif now > entry.at:
            factor = math.exp(-self._lambda * (now - entry.at))
            entry.delivered *= factor
            entry.undelivered *= factor
            entry.at = now
        return entry

    def record(self, provider: str, operator_code: str, *, delivered: bool, count: int = 1) -> None:
        """A final receipt (or `count` of them, e.g. from a periodic query of the database)."""
        entry = self._decayed((provider, operator_code), self._clock())
        if delivered:
            entry.delivered += count
        else:
            entry.undelivered += count

    def rate(self, provider: str, operator_code: str) -> float:
        """The delivered rate with a prior of one receipt each way (0.5 with no evidence)."""
        entry = self._decayed((provider, operator_code), self._clock())
        return (entry.delivered + 1.0) / (entry.delivered + entry.undelivered + 2.0)

    def evidence(self, provider: str, operator_code: str) -> float:
        """How many (decayed) receipts the rate rests on."""
        entry = self._decayed((provider, operator_code), self._clock())
        return entry.delivered + entry.undelivered


def rank(candidates: Sequence[str], operator_code: str, rates: DeliveryRates) -> list[str]:
    """Candidates by delivered rate, best first (ties keep the route's order)."""
    order = {name: index for index, name in enumerate(candidates)}
    return sorted(candidates, key=lambda name: (-rates.rate(name, operator_code), order[name]))


def choose(
    candidates: Sequence[str],
    operator_code: str,
    rates: DeliveryRates,
    *,
    explore: float = DEFAULT_EXPLORE,
    rng: random.Random | None = None,
) -> list[str]:
    """The order in which to try the candidates for one message: usually the best first; with
    probability `explore` one of the others, at random, first. The rest follow by rate, as the
    failover order (so a provider that cannot take messages is passed over, as in any route)."""
    ranked = rank(candidates, operator_code, rates)
    if len(ranked) < 2 or explore <= 0:
        return ranked
    pick = rng or random
    if pick.random() < explore:
        scout = ranked[1 + pick.randrange(len(ranked) - 1)]
        return [scout, *(name for name in ranked if name != scout)]
    return ranked
