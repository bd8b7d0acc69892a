"""The message lifecycle: which status may follow which, and who makes each move.

    fan-out      (none)                      -> pending | cancelled (frequency cap)
                                                                 scheduler.fanout
    lease        pending                     -> queued           scheduler.leasing
    reaper       queued|sending|retrying, lease lapsed -> queued scheduler.leasing
    claim        queued|retrying             -> sending | pending | expired | cancelled
                                                                 sender.store (CLAIM)
    release      queued|retrying             -> pending          sender.store (breaker open)
    result       sending                     -> sent | retrying | failed | expired | pending
                                                | cancelled      sender.store (WRITE_RESULTS)
                 any open, expired, cancelled -> sent            (a delivery is a fact: the
                                                  sweep or an opt-out ended it while a request
                                                  of a sender that lost its lease was under way)
    dead letter  queued|retrying             -> expired | pending   (job expired in the queue)
                 any open                    -> failed              (poison job)
    sweep        open, not held by a sender  -> cancelled | expired   scheduler.sweep
    opt-out      open, not held by a sender  -> cancelled        api.clients.optout
                 (a client's delete too: the same statement, without the reason)
    receipt      sent                        -> delivered | undelivered   shared.receipts
                 (a provider's delivery receipt, matched by its message id)
    retry failed failed                      -> pending          api.mailings.resend
                 (an admin's explicit resend: the one way out of a terminal status)
    test send    (none)                      -> pending          api.mailings.test_send
    test lease   pending | queued|sending|retrying, lease lapsed -> queued
                                                                 scheduler.leasing (LEASE_TESTS)
                 (whatever the mailing's status: a test goes now; outside the lease cap)

Test sends (`is_test`, see shared/domain/test_send.py) take the same claim, result, release
and dead-letter moves as any message; the regular lease and reaper leave them to the test
lease, and the sweep expires them at their own deadline, not at the mailing's end.

A new move is one entry in MOVES and one statement in the module named beside it;
tests/db/test_lifecycle_moves.py runs every statement and fails on a move MOVES does not hold. Every
status
list in the worker SQL comes from here or from `shared.domain.statuses`, through `sql_in`,
never as a string literal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from shared.domain.statuses import MESSAGE_OPEN_STATUSES, MailingStatus, MessageStatus

S = MessageStatus


class Mover(StrEnum):
    FANOUT = "fan-out"
    LEASE = "lease"
    REAPER = "reaper"
    CLAIM = "claim"
    RELEASE = "release"
    RESULT = "result"
    DEAD_LETTER = "dead letter"
    SWEEP = "sweep"
    OPT_OUT = "opt-out"
    RETRY_FAILED = "retry failed"
    TEST_SEND = "test send"
    TEST_LEASE = "test lease"
    UNPUBLISHED = "unpublished"
    RECEIPT = "receipt"


@dataclass(frozen=True, slots=True)
class Move:
    by: Mover
    before: frozenset[MessageStatus | None]  # None: the message does not exist yet
    after: frozenset[MessageStatus]


def _move(
    by: Mover, before: Iterable[MessageStatus | None], after: Iterable[MessageStatus]
) -> Move:
    return Move(by, frozenset(before), frozenset(after))


# What a sender's claim takes: a job's message that is waiting for a sender.
CLAIMABLE = (S.QUEUED, S.RETRYING)
# A live lease: in the broker or in a sender's hands (the scheduler's lease cap counts these).
LEASED = (S.QUEUED, S.SENDING)
# What a lapsed lease gives back to the reaper.
REAPABLE = (S.QUEUED, S.SENDING, S.RETRYING)
# What the sweep expires outright at the end time (a `sending` one only once its lease lapsed).
EXPIRABLE = (S.PENDING, S.QUEUED, S.RETRYING)
OPEN = MESSAGE_OPEN_STATUSES
# What a `sent` result lands on whoever holds the message now: a delivery is a fact. An open
# message (the reaper queued it again after the lease lapsed), and one the sweep expired or an
# opt-out or delete cancelled meanwhile: the provider has it, so the statistics must say so.
DELIVERY_LANDS_ON = (*OPEN, S.EXPIRED, S.CANCELLED)

MOVES: tuple[Move, ...] = (
    _move(Mover.FANOUT, [None], [S.PENDING, S.CANCELLED]),
    _move(Mover.LEASE, [S.PENDING], [S.QUEUED]),
    _move(Mover.REAPER, REAPABLE, [S.QUEUED]),
    _move(Mover.CLAIM, CLAIMABLE, [S.SENDING, S.PENDING, S.EXPIRED, S.CANCELLED]),
    _move(Mover.RELEASE, CLAIMABLE, [S.PENDING]),
    _move(
        Mover.RESULT,
        [S.SENDING],
        [S.SENT, S.RETRYING, S.FAILED, S.EXPIRED, S.PENDING, S.CANCELLED],
    ),
    _move(Mover.RESULT, DELIVERY_LANDS_ON, [S.SENT]),
    _move(Mover.DEAD_LETTER, CLAIMABLE, [S.EXPIRED, S.PENDING]),
    _move(Mover.DEAD_LETTER, OPEN, [S.FAILED]),
    _move(Mover.SWEEP, OPEN, [S.CANCELLED]),
    _move(Mover.SWEEP, (*EXPIRABLE, S.SENDING), [S.EXPIRED]),
    _move(Mover.OPT_OUT, OPEN, [S.CANCELLED]),
    _move(Mover.RETRY_FAILED, [S.FAILED], [S.PENDING]),
    _move(Mover.TEST_SEND, [None], [S.PENDING]),
    _move(Mover.TEST_LEASE, (S.PENDING, *REAPABLE), [S.QUEUED]),
    # A lease whose job the broker refused goes back at once, not when its lease lapses.
    _move(Mover.UNPUBLISHED, [S.QUEUED], [S.PENDING]),
    # A delivery receipt: only a `sent` message (one receipt counts once; a second finds it
    # delivered already and changes nothing).
    _move(Mover.RECEIPT, [S.SENT], [S.DELIVERED, S.UNDELIVERED]),
)

# What a sender's result may say about a message it held.
RESULT_STATUSES = frozenset().union(*(m.after for m in MOVES if m.by is Mover.RESULT))


def movers(before: MessageStatus | None, after: MessageStatus) -> frozenset[Mover]:
    """Who may move a message from `before` to `after` (empty: nobody, the move is illegal)."""
    return frozenset(m.by for m in MOVES if before in m.before and after in m.after)


def may_follow(before: MessageStatus | None, after: MessageStatus) -> bool:
    return bool(movers(before, after))


def sql(status: StrEnum) -> str:
    """A status (of a message or a mailing) as an SQL literal."""
    return f"'{status.value}'"


def sql_in(statuses: Iterable[StrEnum]) -> str:
    """Statuses as the inside of an SQL `IN (...)` list."""
    return ", ".join(sql(s) for s in statuses)


def held_by_sender_sql(message: str) -> str:
    """A request under way (`sending` with a live lease): only its sender may settle it, with
    what the provider really answered. `message` is the message table's alias."""
    return (
        f"({message}.status = {sql(S.SENDING)} AND coalesce({message}.lease_until > now(), false))"
    )


def open_not_held_sql(message: str) -> str:
    """An open message no sender holds: what the sweep, an opt-out and a client's delete end."""
    return f"({message}.status IN ({sql_in(OPEN)}) AND NOT {held_by_sender_sql(message)})"


def mailing_stopped_sql(mailing: str) -> str:
    """A mailing deleted or cancelled: its undelivered messages are cancelled, none is sent."""
    return (
        f"({mailing}.deleted_at IS NOT NULL OR {mailing}.status = {sql(MailingStatus.CANCELLED)})"
    )
