"""Why a message waits: the pure rule behind the console's column and the stats' `waiting`."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from shared.domain.send_window import SendWindow
from shared.domain.statuses import MailingStatus, MessageStatus
from shared.domain.waiting import Wait, WaitReason, describe, message_wait

NOW = datetime(2026, 12, 1, 19, 0, tzinfo=UTC)  # 22:00 in Moscow


def wait(**overrides: object) -> Wait | None:
    given: dict[str, object] = {
        "status": MessageStatus.PENDING,
        "not_before": NOW,
        "attempts": 0,
        "mailing_status": MailingStatus.RUNNING,
        "start_at": NOW - timedelta(hours=1),
        "window": None,
        "client_timezone": "Europe/Moscow",
        "now": NOW,
    }
    return message_wait(**(given | overrides))  # type: ignore[arg-type]


def test_closed_window_says_when_it_opens_in_the_clients_zone() -> None:
    result = wait(window=SendWindow(time(9), time(21)))
    assert result is not None and result.reason is WaitReason.SEND_WINDOW
    assert result.until == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    assert describe(result) == (
        "send window closed until 09:00 in the client's zone (Europe/Moscow)"
    )


def test_retry_paused_scheduled_in_line_and_done() -> None:
    due = NOW + timedelta(minutes=4)
    retry = wait(status=MessageStatus.RETRYING, not_before=due, attempts=1)
    assert retry == Wait(WaitReason.RETRY, due)
    assert describe(retry, "UTC") == "a retry is due at 19:04 (UTC)"
    assert wait(mailing_status=MailingStatus.PAUSED) == Wait(WaitReason.PAUSED)
    later = NOW + timedelta(hours=2)
    assert wait(mailing_status=MailingStatus.SCHEDULED, start_at=later) == Wait(
        WaitReason.SCHEDULED, later
    )
    assert wait() == Wait(WaitReason.IN_LINE)
    assert wait(status=MessageStatus.SENDING) == Wait(WaitReason.SENDING)
    assert wait(status=MessageStatus.SENT) is None
    assert wait(status=MessageStatus.CANCELLED) is None


def test_a_message_with_its_receipt_waits_for_nothing() -> None:
    """Delivered and undelivered (issue 19) are done, even with the send window closed or
    the mailing paused."""
    for status in (MessageStatus.DELIVERED, MessageStatus.UNDELIVERED):
        assert wait(status=status, window=SendWindow(time(9), time(21))) is None
        assert wait(status=status, mailing_status=MailingStatus.PAUSED) is None
