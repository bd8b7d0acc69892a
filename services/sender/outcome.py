"""The outcome policy: what a claimed message becomes, from the provider's answer and the clock.

Pure: no I/O, no breaker, no logging. `before_request` says whether a claimed message may be
sent now; `after_answer` turns the provider's answer into the result to write. The caller
(`services.sender.sending`) feeds the breaker and logs; the clock (`now`, seconds of
`time.monotonic()`) and the jitter factor are arguments, so every branch is a unit test.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.sender.provider import Outcome, SendResult
from services.sender.store import Claimed, Result
from shared.domain.end_time import END_REACHED, last_start_at, may_start
from shared.domain.retry import retry_delay
from shared.domain.statuses import MessageStatus
from shared.settings import SENDING_LEASE_SLACK_S, SenderSettings

S = MessageStatus


@dataclass(frozen=True, slots=True)
class Policy:
    margin_s: float  # END_SAFETY_MARGIN_S
    lease_s: float  # SENDING_LEASE_S
    timeout_s: float  # PROVIDER_TIMEOUT_S
    max_attempts: int
    retry_delays_s: tuple[float, ...]

    @property
    def result_slack_s(self) -> float:
        """What a request leaves of its lease for reading the answer and writing the result:
        half of what the lease has beyond two timeouts, at most half of SENDING_LEASE_SLACK_S
        (1 s by default). A result written after the lease may meet another sender's
        duplicate: the reaper gave the message to it."""
        return max(min(SENDING_LEASE_SLACK_S, self.lease_s - 2 * self.timeout_s), 0.0) / 2

    @classmethod
    def from_settings(cls, settings: SenderSettings) -> Policy:
        return cls(
            margin_s=settings.end_safety_margin_s,
            lease_s=settings.sending_lease_s,
            timeout_s=settings.provider_timeout_s,
            max_attempts=settings.max_attempts,
            retry_delays_s=tuple(settings.retry_delays_s),
        )


def seconds_to_end(claimed: Claimed, now: float) -> float:
    """Time left to the mailing's end: the database's answer at the claim, less what passed."""
    return claimed.seconds_to_end - (now - claimed.claimed_at)


def lease_start_by(claimed: Claimed, policy: Policy) -> float:
    """The last moment (on the claim's clock) a request may be written and still end, answer
    read and result written, inside the message's `sending` lease."""
    return claimed.claimed_at + policy.lease_s - policy.timeout_s - policy.result_slack_s


def end_start_by(claimed: Claimed, policy: Policy) -> float:
    """The end time's last start (`end - margin`) on the claim's clock."""
    return last_start_at(claimed.claimed_at, claimed.seconds_to_end, policy.margin_s)


def start_by(claimed: Claimed, policy: Policy) -> float:
    """The last moment the HTTP client may write the request: the lease's or the end time's,
    whichever comes first. The client checks it as it writes the request, a loop turn or, on
    a starved machine, a good part of a second after `before_request`."""
    return min(lease_start_by(claimed, policy), end_start_by(claimed, policy))


def _result(
    c: Claimed,
    status: MessageStatus,
    error: str | None = None,
    *,
    delay_s: float = 0.0,
    attempted: int = 1,
    why: str = "",
) -> Result:
    return Result(
        c.message_id, c.mailing_id, c.token, status, error, delay_s, attempted, why or status
    )


def _lease_lapsing(c: Claimed) -> Result:
    return _result(c, S.PENDING, attempted=0, why="lease_lapsing")


def released(c: Claimed, delay_s: float) -> Result:
    """Given back unsent (the breaker is open): pending again, no attempt spent."""
    return _result(c, S.PENDING, delay_s=delay_s, attempted=0, why="released")


def stopped(c: Claimed, becomes: MessageStatus) -> Result:
    """Its mailing was paused (pending) or deleted (cancelled) since the claim."""
    return _result(c, becomes, attempted=0)


def before_request(c: Claimed, *, now: float, policy: Policy) -> Result | None:
    """None when the request may start now; else what the message becomes unsent."""
    # A lease that can no longer cover this request may already be another sender's (this
    # process was frozen or starved): give the message back instead of sending it.
    if now >= lease_start_by(c, policy):
        return _lease_lapsing(c)
    if not may_start(seconds_to_end(c, now), policy.margin_s):
        # Too close to the end to start a request: it might land after the end.
        return _result(c, S.EXPIRED, END_REACHED, attempted=0)
    return None


def after_answer(
    c: Claimed,
    answer: SendResult,
    *,
    now: float,
    policy: Policy,
    jitter: float = 1.0,
    release_delay_s: float = 0.0,
) -> Result:
    """The result of one request. `release_delay_s`: how long until the breaker lets traffic
    through again (for an answer that opened it)."""
    if answer.outcome is Outcome.SENT:
        return _result(c, S.SENT)
    if answer.outcome is Outcome.UNAUTHORIZED:
        return released(c, release_delay_s)
    if answer.outcome is Outcome.NOT_SENT:
        # `start_by` passed before the client could write the request: the lease's last start
        # (the message goes back, unsent, for a sender to claim) or the end time's.
        if lease_start_by(c, policy) < end_start_by(c, policy):
            return _lease_lapsing(c)
        return _result(c, S.EXPIRED, END_REACHED, attempted=0, why="not_sent")
    if answer.outcome is Outcome.REJECTED:
        return _result(c, S.FAILED, answer.error, why="rejected")
    attempt = c.attempts + 1
    if attempt >= policy.max_attempts:
        return _result(c, S.FAILED, f"retries exhausted: {answer.error}", why="exhausted")
    delay = retry_delay(attempt, policy.retry_delays_s, answer.retry_after, jitter=jitter)
    # Back in time to be sent, after the delay and with the margin still left?
    if not may_start(seconds_to_end(c, now), policy.margin_s, after_s=delay):
        return _result(c, S.EXPIRED, f"{END_REACHED}; last: {answer.error}")
    return _result(c, S.RETRYING, answer.error, delay_s=delay)
