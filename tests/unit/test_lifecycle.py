"""The message lifecycle: who may move a message from which status to which."""

from __future__ import annotations

import pytest

from shared.domain.lifecycle import MOVES, Mover, may_follow, movers, sql, sql_in
from shared.domain.statuses import MESSAGE_TERMINAL_STATUSES, MessageStatus

S = MessageStatus


@pytest.mark.parametrize(
    ("before", "after", "by"),
    [
        (None, S.PENDING, {Mover.FANOUT, Mover.TEST_SEND}),
        (S.PENDING, S.QUEUED, {Mover.LEASE, Mover.TEST_LEASE}),
        (S.SENDING, S.QUEUED, {Mover.REAPER, Mover.TEST_LEASE}),
        (S.QUEUED, S.SENDING, {Mover.CLAIM}),
        (S.SENDING, S.RETRYING, {Mover.RESULT}),
        (S.QUEUED, S.SENT, {Mover.RESULT}),  # a delivery is a fact, whoever holds it now
        (S.RETRYING, S.PENDING, {Mover.CLAIM, Mover.RELEASE, Mover.DEAD_LETTER}),
        (S.PENDING, S.EXPIRED, {Mover.SWEEP}),
    ],
)
def test_who_makes_each_move(before: S | None, after: S, by: set[Mover]) -> None:
    assert movers(before, after) == by


def test_nothing_leaves_a_terminal_status_but_a_delivery_a_receipt_or_a_retry_of_failed() -> None:
    for status in MESSAGE_TERMINAL_STATUSES:
        for after in S:
            if (status, after) == (S.FAILED, S.PENDING):
                assert movers(status, after) == {Mover.RETRY_FAILED}
            elif status in (S.EXPIRED, S.CANCELLED) and after is S.SENT:
                # The sweep or an opt-out ended it while a request was under way (the sender
                # had lost its lease): the provider has it, so it is sent.
                assert movers(status, after) == {Mover.RESULT}
            elif status is S.SENT and after in (S.DELIVERED, S.UNDELIVERED):
                # `sent` is "accepted, receipt not yet in": the receipt settles it, once.
                assert movers(status, after) == {Mover.RECEIPT}
            else:
                assert not may_follow(status, after), (status, after)


def test_nothing_goes_from_pending_straight_to_sending() -> None:
    assert not may_follow(S.PENDING, S.SENDING)
    assert not may_follow(S.PENDING, S.RETRYING)


def test_every_status_is_reachable() -> None:
    reached = set().union(*(m.after for m in MOVES))
    assert reached == set(S)


def test_sql_literals() -> None:
    assert sql(S.SENDING) == "'sending'"
    assert sql_in([S.QUEUED, S.RETRYING]) == "'queued', 'retrying'"
