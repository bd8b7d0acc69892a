"""How the fan-out sizes a chunk and moves its cursor (the SQL runs in the pipeline tests)."""

from __future__ import annotations

from services.scheduler.fanout import FIRST_CHUNK_SIZE, MAX_SCAN_IDS, ChunkPlan, plan_chunk


def test_a_mailings_first_chunk_is_small_then_chunks_take_the_full_size() -> None:
    first = plan_chunk(0, 5_000_000, first=True, chunk_size=20_000)
    assert first.limit == FIRST_CHUNK_SIZE
    later = plan_chunk(first.high, 5_000_000, first=False, chunk_size=20_000)
    assert later.limit == 20_000


def test_the_first_chunk_never_exceeds_the_chunk_size() -> None:
    assert plan_chunk(None, 100, first=True, chunk_size=10).limit == 10


def test_a_chunk_stays_within_the_recipient_snapshot_and_the_scan_bound() -> None:
    assert plan_chunk(0, 500, first=False, chunk_size=20_000) == ChunkPlan(0, 500, 20_000)
    far = plan_chunk(10, 10**9, first=False, chunk_size=20_000)
    assert far.high == 10 + MAX_SCAN_IDS
    huge = plan_chunk(0, 10**9, first=False, chunk_size=2 * MAX_SCAN_IDS)
    assert huge.high == 2 * MAX_SCAN_IDS


def test_nothing_to_scan_when_the_cursor_reached_the_snapshot() -> None:
    plan = plan_chunk(700, 700, first=False, chunk_size=100)
    assert plan.high == plan.cursor == 700
    assert plan_chunk(None, None, first=True, chunk_size=100) == ChunkPlan(0, 0, 100)


def test_the_cursor_stops_at_the_last_client_of_a_full_chunk() -> None:
    plan = ChunkPlan(cursor=0, high=1_000_000, limit=100)
    assert plan.next_cursor(picked=100, reached=180) == 180


def test_a_short_chunk_covered_its_whole_range() -> None:
    """Fewer matching clients than the limit: none is left up to `high`, so a sparse filter
    moves on by the whole scanned range."""
    plan = ChunkPlan(cursor=0, high=1_000_000, limit=100)
    assert plan.next_cursor(picked=3, reached=42) == 1_000_000
    assert plan.next_cursor(picked=0, reached=None) == 1_000_000
