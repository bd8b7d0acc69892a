"""The scheduler's send window follows the senders' drain rate."""

from __future__ import annotations

from services.scheduler.window import SendWindow


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_the_minimum_until_a_rate_is_seen() -> None:
    window = SendWindow(minimum=200, maximum=5000, horizon_s=30, clock=Clock())
    assert window.size == 200
    window.observe(0)
    assert window.size == 200


def test_grows_with_fast_senders_up_to_the_cap() -> None:
    clock = Clock()
    window = SendWindow(minimum=200, maximum=5000, horizon_s=30, clock=clock)
    window.observe(0)
    clock.now = 1.0
    window.observe(0)  # empty all along: no sample
    assert window.rate is None
    window.leased(200)
    clock.now = 2.0
    window.observe(50)  # 150 of 200 left in a second
    assert window.rate == 150
    assert window.size == 4500
    window.leased(10_000)
    clock.now = 3.0
    window.observe(50)
    assert window.size == 5000


def test_shrinks_when_senders_slow_down_so_leases_do_not_lapse_in_the_queue() -> None:
    clock = Clock()
    window = SendWindow(minimum=200, maximum=5000, horizon_s=30, clock=clock, smoothing=1.0)
    window.observe(1000)
    clock.now = 10.0
    window.observe(900)  # 10 messages a second
    assert window.size == 300
    clock.now = 20.0
    window.observe(890)  # 1 a second: the minimum holds
    assert window.size == 200


def test_a_full_window_that_does_not_drain_measures_zero() -> None:
    clock = Clock()
    window = SendWindow(minimum=100, maximum=5000, horizon_s=30, clock=clock, smoothing=1.0)
    window.observe(100)
    clock.now = 5.0
    window.observe(100)
    assert window.rate == 0
    assert window.size == 100
