"""The sender's outcome policy: claimed message + provider answer + clock -> result."""

from __future__ import annotations

import pytest

from services.sender.outcome import (
    Policy,
    after_answer,
    before_request,
    released,
    seconds_to_end,
    start_by,
    stopped,
)
from services.sender.provider import Outcome, SendResult
from services.sender.store import Claimed
from shared.domain.end_time import END_REACHED
from shared.domain.lifecycle import RESULT_STATUSES
from shared.domain.statuses import MessageStatus

S = MessageStatus
POLICY = Policy(
    margin_s=2.0,
    lease_s=60.0,
    timeout_s=10.0,
    max_attempts=5,
    retry_delays_s=(1.0, 2.0, 4.0, 8.0, 30.0),
)
CLAIMED_AT = 1000.0


def claimed(*, attempts: int = 0, seconds_to_end: float = 3600.0) -> Claimed:
    return Claimed(
        message_id=11,
        token=22,
        status=S.SENDING,
        mailing_id=33,
        client_id=44,
        attempts=attempts,
        phone="79000000001",
        text="hi",
        seconds_to_end=seconds_to_end,
        claimed_at=CLAIMED_AT,
    )


def test_seconds_to_end_counts_from_the_claim() -> None:
    assert seconds_to_end(claimed(seconds_to_end=100), CLAIMED_AT + 30) == 70


# --- before the request ----------------------------------------------------------------------


def test_a_fresh_claim_may_be_sent() -> None:
    assert before_request(claimed(), now=CLAIMED_AT + 1, policy=POLICY) is None


def test_a_lease_that_cannot_cover_the_request_gives_the_message_back() -> None:
    # 49 s after the claim a 10 s request would leave less than the 1 s result slack of the
    # 60 s lease for reading the answer and writing the result.
    assert POLICY.result_slack_s == 1.0
    result = before_request(claimed(), now=CLAIMED_AT + 49, policy=POLICY)
    assert result is not None
    assert (result.status, result.attempted, result.why) == (S.PENDING, 0, "lease_lapsing")
    assert before_request(claimed(), now=CLAIMED_AT + 48.9, policy=POLICY) is None


@pytest.mark.parametrize(
    ("lease_s", "timeout_s", "slack_s"), [(60, 10, 1.0), (22, 10, 1.0), (5, 2, 0.5), (4.2, 2, 0.1)]
)
def test_the_result_slack_is_half_what_the_lease_has_beyond_two_timeouts_at_most_1_s(
    lease_s: float, timeout_s: float, slack_s: float
) -> None:
    policy = Policy(
        margin_s=0, lease_s=lease_s, timeout_s=timeout_s, max_attempts=1, retry_delays_s=(1.0,)
    )
    assert policy.result_slack_s == pytest.approx(slack_s)


def test_the_client_may_write_the_request_until_the_lease_or_the_end_allows_it_first() -> None:
    # The lease's last start: claim + 60 - 10 - 1; the end time's: claim + 3600 - 2.
    assert start_by(claimed(), POLICY) == CLAIMED_AT + 49
    assert start_by(claimed(seconds_to_end=30), POLICY) == CLAIMED_AT + 28


def test_a_request_not_written_by_the_leases_last_start_is_given_back() -> None:
    not_sent = answer(Outcome.NOT_SENT)
    lapsing = after_answer(claimed(), not_sent, now=CLAIMED_AT + 49.5, policy=POLICY)
    assert (lapsing.status, lapsing.attempted, lapsing.why) == (S.PENDING, 0, "lease_lapsing")
    late = after_answer(claimed(seconds_to_end=30), not_sent, now=CLAIMED_AT + 28.5, policy=POLICY)
    assert (late.status, late.error, late.attempted, late.why) == (
        S.EXPIRED,
        END_REACHED,
        0,
        "not_sent",
    )


def test_no_request_starts_within_the_margin_of_the_end() -> None:
    result = before_request(claimed(seconds_to_end=10), now=CLAIMED_AT + 8, policy=POLICY)
    assert result is not None
    assert (result.status, result.error, result.attempted) == (S.EXPIRED, END_REACHED, 0)
    assert before_request(claimed(seconds_to_end=10), now=CLAIMED_AT + 7.9, policy=POLICY) is None


# --- after the answer ------------------------------------------------------------------------


def answer(
    outcome: Outcome, error: str | None = None, retry_after: float | None = None
) -> SendResult:
    return SendResult(outcome, error, retry_after)


def test_sent() -> None:
    result = after_answer(claimed(), answer(Outcome.SENT), now=CLAIMED_AT + 1, policy=POLICY)
    assert (result.status, result.attempted, result.error) == (S.SENT, 1, None)
    assert (result.message_id, result.mailing_id, result.token) == (11, 33, 22)


def test_rejected_fails_for_good() -> None:
    result = after_answer(
        claimed(), answer(Outcome.REJECTED, "HTTP 400"), now=CLAIMED_AT, policy=POLICY
    )
    assert (result.status, result.error, result.attempted) == (S.FAILED, "HTTP 400", 1)


def test_unauthorized_releases_until_the_breaker_reopens() -> None:
    result = after_answer(
        claimed(), answer(Outcome.UNAUTHORIZED), now=CLAIMED_AT, policy=POLICY, release_delay_s=7
    )
    assert (result.status, result.delay_s, result.attempted) == (S.PENDING, 7, 0)


@pytest.mark.parametrize(("attempts", "delay"), [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0)])
def test_a_failure_retries_on_the_ladder(attempts: int, delay: float) -> None:
    result = after_answer(
        claimed(attempts=attempts), answer(Outcome.RETRY, "HTTP 500"), now=CLAIMED_AT, policy=POLICY
    )
    assert (result.status, result.delay_s, result.error) == (S.RETRYING, delay, "HTTP 500")
    assert result.attempted == 1


def test_jitter_moves_the_delay_to_a_neighbouring_tier() -> None:
    result = after_answer(
        claimed(attempts=3), answer(Outcome.RETRY), now=CLAIMED_AT, policy=POLICY, jitter=0.5
    )
    assert result.delay_s == 4.0


def test_retry_after_is_honoured() -> None:
    result = after_answer(
        claimed(), answer(Outcome.RETRY, "HTTP 429", 20.0), now=CLAIMED_AT, policy=POLICY
    )
    assert result.delay_s == 30.0


def test_the_last_attempt_fails_the_message() -> None:
    result = after_answer(
        claimed(attempts=4), answer(Outcome.RETRY, "HTTP 500"), now=CLAIMED_AT, policy=POLICY
    )
    assert (result.status, result.why) == (S.FAILED, "exhausted")
    assert result.error == "retries exhausted: HTTP 500"


def test_a_retry_that_cannot_come_back_before_the_end_expires() -> None:
    # 4 s left at the answer; a 1 s delay leaves 3 s > the 2 s margin: retry.
    ok = after_answer(
        claimed(seconds_to_end=5), answer(Outcome.RETRY, "x"), now=CLAIMED_AT + 1, policy=POLICY
    )
    assert ok.status is S.RETRYING
    # 3 s left: after the delay only 2 s, not more than the margin: expired.
    late = after_answer(
        claimed(seconds_to_end=5), answer(Outcome.RETRY, "x"), now=CLAIMED_AT + 2, policy=POLICY
    )
    assert (late.status, late.error) == (S.EXPIRED, f"{END_REACHED}; last: x")


def test_a_request_not_written_by_its_last_start_expires_without_an_attempt() -> None:
    result = after_answer(
        claimed(seconds_to_end=5),
        answer(Outcome.NOT_SENT, END_REACHED),
        now=CLAIMED_AT + 2,
        policy=POLICY,
    )
    assert (result.status, result.error, result.attempted) == (S.EXPIRED, END_REACHED, 0)


def test_released_and_stopped_spend_no_attempt() -> None:
    assert released(claimed(), 3.0).attempted == 0
    assert released(claimed(), 3.0).delay_s == 3.0
    assert stopped(claimed(), S.CANCELLED).status is S.CANCELLED
    assert stopped(claimed(), S.PENDING).attempted == 0


@pytest.mark.parametrize("outcome", list(Outcome))
@pytest.mark.parametrize("attempts", [0, 3, 4])
@pytest.mark.parametrize("left", [1.0, 3.5, 3600.0])
def test_every_result_is_a_legal_move_from_sending(
    outcome: Outcome, attempts: int, left: float
) -> None:
    result = after_answer(
        claimed(attempts=attempts, seconds_to_end=left),
        answer(outcome),
        now=CLAIMED_AT,
        policy=POLICY,
    )
    assert result.status in RESULT_STATUSES
