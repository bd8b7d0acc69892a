"""The scheduler's duties keep apart: batches that shrink on a timeout, back-offs of their own."""

from __future__ import annotations

from services.scheduler.duty import AdaptiveBatch, Backoff


def test_a_timed_out_batch_is_halved_down_to_its_minimum() -> None:
    batch = AdaptiveBatch(maximum=50_000, minimum=1_000)
    sizes = []
    for _ in range(8):
        batch.timed_out()
        sizes.append(batch.size)
    assert sizes == [25_000, 12_500, 6_250, 3_125, 1_562, 1_000, 1_000, 1_000]


def test_a_slow_batch_aims_at_its_target_and_fast_full_ones_grow_back() -> None:
    batch = AdaptiveBatch(maximum=50_000, minimum=100, target_s=1.0)
    batch.finished(rows=50_000, seconds=4.0)
    assert batch.size == 12_500
    batch.finished(rows=12_500, seconds=0.3)
    assert batch.size == 25_000
    batch.finished(rows=10, seconds=0.01)  # not full: nothing learnt about a bigger size
    assert batch.size == 25_000
    for _ in range(5):
        batch.finished(rows=batch.size, seconds=0.1)
    assert batch.size == 50_000


def test_backoff_doubles_per_failure_up_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(base=0.5, ceiling=4.0)
    assert [backoff.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.succeeded()
    assert backoff.failed() == 0.5
