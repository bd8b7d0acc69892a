"""When a route would finish at its rate, within the send window (the pre-send check)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from shared.domain.send_estimate import can_finish, finishes_at
from shared.domain.send_window import SendWindow

START = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


def test_no_rate_cap_means_no_estimate_and_it_can_finish() -> None:
    assert finishes_at(recipients=10**6, max_tps=None, start_at=START, window=None) is None
    assert can_finish(None, START, rate_known=False)


def test_without_a_window_it_sends_straight_through() -> None:
    finish = finishes_at(recipients=3600, max_tps=10, start_at=START, window=None)
    assert finish == START + timedelta(minutes=6)
    assert can_finish(finish, START + timedelta(minutes=6), rate_known=True)
    assert not can_finish(finish, START + timedelta(minutes=5), rate_known=True)


def test_a_window_holds_the_rest_for_its_next_opening() -> None:
    window = SendWindow(time(9, 0), time(21, 0))  # twelve hours a day
    # 18 hours of sending from 08:00: 09:00-21:00 on the first day, 09:00-15:00 on the next.
    finish = finishes_at(recipients=18 * 3600, max_tps=1, start_at=START, window=window)
    assert finish == datetime(2030, 3, 2, 15, 0, tzinfo=UTC)


def test_a_window_across_midnight() -> None:
    window = SendWindow(time(22, 0), time(2, 0))  # four hours a night
    finish = finishes_at(recipients=6 * 3600, max_tps=1, start_at=START, window=window)
    # 22:00-02:00 the first night, then two more hours from 22:00 the next.
    assert finish == datetime(2030, 3, 3, 0, 0, tzinfo=UTC)
