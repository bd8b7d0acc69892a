"""The scheduler's lease cap follows the senders' drain rate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.scheduler.lease_cap import LeaseCap, cap_horizon_s
from shared.settings import SchedulerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_starts_at_the_minimum_until_a_rate_is_seen() -> None:
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=30, clock=Clock())
    assert cap.size == 200
    cap.observe(0)
    assert cap.size == 200


def test_grows_with_fast_senders_up_to_the_cap() -> None:
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=30, clock=clock, time_constant_s=0)
    cap.observe(0)
    clock.now = 1.0
    cap.observe(0)  # empty all along: no sample
    assert cap.rate is None
    cap.leased(200)
    clock.now = 2.0
    cap.observe(50)  # 150 of 200 left in a second
    assert cap.rate == 150
    assert cap.size == 4500
    cap.leased(10_000)
    clock.now = 3.0
    cap.observe(50)
    assert cap.size == 5000


def test_shrinks_when_senders_slow_down_so_leases_do_not_lapse_in_the_queue() -> None:
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=30, clock=clock, time_constant_s=0)
    cap.observe(1000)
    clock.now = 10.0
    cap.observe(900)  # 10 messages a second
    assert cap.size == 300
    clock.now = 20.0
    cap.observe(890)  # 1 a second: the minimum holds
    assert cap.size == 200


def test_a_full_window_that_does_not_drain_measures_zero() -> None:
    clock = Clock()
    cap = LeaseCap(minimum=100, maximum=5000, horizon_s=30, clock=clock, time_constant_s=0)
    cap.observe(100)
    clock.now = 5.0
    cap.observe(100)
    assert cap.rate == 0
    assert cap.size == 100


def test_a_window_the_senders_empty_grows_instead_of_spiralling_down() -> None:
    """Senders faster than the cap empty it and wait: the drain rate measured is only what
    the cap let through. Looked at less often than the horizon, that would shrink the cap
    every time; instead a full cap that drained dry doubles."""
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=2, clock=clock)
    cap.observe(0)
    sizes = []
    for _ in range(8):
        size = cap.size
        cap.leased(size)  # fill it
        clock.now += 3.0  # longer than the horizon: the sample alone would be size / 3 per second
        cap.observe(0)  # the senders took everything
        sizes.append(cap.size)
    assert sizes[:5] == [400, 800, 1600, 3200, 5000]
    assert sizes[-1] == 5000


def test_a_drained_window_that_was_not_full_keeps_the_measured_rate() -> None:
    """Demand, not the cap, limited the leases: nothing says the senders could take more."""
    clock = Clock()
    cap = LeaseCap(minimum=100, maximum=5000, horizon_s=2, clock=clock, time_constant_s=0)
    cap.observe(0)
    cap.leased(50)
    clock.now = 1.0
    cap.observe(0)
    assert cap.rate == 50
    assert cap.size == 100


def test_a_full_window_still_live_does_not_grow() -> None:
    """The senders did not empty it: the measured rate stands, whatever the cap was."""
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=2, clock=clock, time_constant_s=0)
    cap.observe(0)
    cap.leased(200)
    clock.now = 1.0
    cap.observe(150)  # 50 a second, 150 still live
    assert cap.rate == 50
    assert cap.size == 200


def test_the_horizon_is_a_few_seconds_and_within_a_quarter_of_the_lease() -> None:
    assert cap_horizon_s(120.0, 2.0) == 2.0
    assert cap_horizon_s(4.0, 2.0) == 1.0
    settings = SchedulerSettings()
    assert settings.lease_cap_horizon_s == 2.0
    assert cap_horizon_s(settings.lease_ttl_s, settings.lease_cap_horizon_s) == 2.0


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_the_horizon_setting_is_validated(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEASE_CAP_HORIZON_S", value)
    with pytest.raises(ValidationError):
        SchedulerSettings()


def test_a_big_window_holds_only_the_horizon_of_work() -> None:
    """Fast senders do not fill LEASE_CAP when it is more than a few seconds of their work:
    a new mailing's first jobs queue behind about `horizon_s` seconds of the others'."""
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=2, clock=clock, time_constant_s=0)
    cap.observe(1000)
    clock.now = 1.0
    cap.observe(500)  # 500 a second, half still live
    assert cap.size == 1000


def test_starts_at_the_initial_size_until_a_rate_is_seen_within_the_bounds() -> None:
    assert LeaseCap(minimum=200, maximum=5000, horizon_s=2, initial=2000).size == 2000
    assert LeaseCap(minimum=200, maximum=1000, horizon_s=2, initial=2000).size == 1000
    assert LeaseCap(minimum=200, maximum=5000, horizon_s=2, initial=50).size == 200


def test_the_scheduler_starts_the_cap_at_what_a_slow_sender_drains_within_the_lease() -> None:
    from services.scheduler.service import MIN_LEASE_CAP, initial_lease_cap

    assert initial_lease_cap(120.0) == 2000  # the default TTL: a short mailing at once
    assert initial_lease_cap(5.0) < MIN_LEASE_CAP  # a short TTL: the minimum, as before


def test_a_burst_between_two_close_looks_barely_moves_the_rate() -> None:
    """Results land in batches, and the scheduler looks again within milliseconds while it
    tops up: 20 messages finished in 10 ms is a sample of 2,000/s. Weighed like a sample of a
    second, it lifted the cap fourfold (230 to about 1,000 at 185 sends/s, more than the lease
    could cover); weighed by the time it covers, it moves the rate by about 1%."""
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=1.25, clock=clock)
    cap.observe(230)
    for _ in range(20):  # a steady 185/s, looked at every 100 ms
        cap.leased(18)
        clock.now += 0.1
        cap.observe(230 - 0.5)
    steady = cap.rate
    assert steady is not None and 150 < steady < 220
    clock.now += 0.01
    cap.observe(230 - 20)  # a batch of 20 results between two looks 10 ms apart
    assert cap.rate is not None and cap.rate < steady * 1.2
    assert cap.size < 300


def test_leases_that_lapse_unclaimed_are_not_counted_as_drained() -> None:
    """The senders take nothing; leases lapse and are re-published. Outstanding leases stay
    where they were, so the rate is nil and the cap does not grow (it used to: the lapsed
    leases left the live count, which read as a cap drained dry, and the cap doubled)."""
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=2, clock=clock)
    cap.observe(0)
    cap.leased(200)
    for _ in range(5):
        clock.now += 6.0  # past the lease: all 200 lapsed, then the reaper re-published them
        cap.observe(200)  # outstanding all along; re-published leases are not `leased()`
    assert cap.rate == pytest.approx(0, abs=1e-6)
    assert cap.size == 200


def test_a_look_right_after_the_first_lease_keeps_the_initial_cap() -> None:
    """A fresh system: the first lease fills the initial cap and the scheduler looks again
    10 ms later, before any sender finished a message. That sample of nothing moves the rate
    the initial cap stands for by 1% (it used to replace it, and the cap fell to the minimum,
    holding a short mailing's last messages back); the drain that follows moves it on."""
    clock = Clock()
    cap = LeaseCap(minimum=200, maximum=5000, horizon_s=2, clock=clock, initial=2000)
    cap.observe(0)
    cap.leased(1000)
    clock.now += 0.01
    cap.observe(1000)
    assert cap.size == pytest.approx(2000, rel=0.02)
    clock.now += 0.5
    cap.observe(100)  # 900 sent in half a second: 1,800/s
    assert 2000 < cap.size < 3600
