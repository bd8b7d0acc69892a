"""Why an undelivered message (or a whole mailing) is waiting, in words a person can act on.

The console shows it beside each message and `GET /api/v1/mailings/{id}/stats` returns it,
so a mailing sitting at `pending: 1` says it waits for 09:00 in the client's zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from shared.domain.send_window import SendWindow, is_window_open, next_window_open
from shared.domain.statuses import MESSAGE_TERMINAL_STATUSES, MailingStatus, MessageStatus


class WaitReason(StrEnum):
    SCHEDULED = "scheduled"  # the mailing's start time has not come
    PAUSED = "paused"  # an admin paused the mailing
    SEND_WINDOW = "send_window"  # the client's send window is closed
    RETRY = "retry"  # a failed attempt; the next one is due later
    IN_LINE = "in_line"  # due now, waiting for its turn in the send queue
    SENDING = "sending"  # with a sender or at the provider right now


@dataclass(frozen=True, slots=True)
class Wait:
    reason: WaitReason
    until: datetime | None = None  # when the wait ends, if known (aware)
    timezone: str | None = None  # the zone `until` is meaningful in (the client's)


def message_wait(
    *,
    status: MessageStatus,
    not_before: datetime,
    attempts: int,
    mailing_status: MailingStatus,
    start_at: datetime,
    window: SendWindow | None,
    client_timezone: str,
    now: datetime,
) -> Wait | None:
    """Why a message is not delivered yet; None for a message that no longer waits."""
    if status in MESSAGE_TERMINAL_STATUSES:  # sent, delivered, undelivered, failed, …
        return None
    if mailing_status is MailingStatus.PAUSED:
        return Wait(WaitReason.PAUSED)
    if mailing_status is MailingStatus.SCHEDULED and start_at > now:
        return Wait(WaitReason.SCHEDULED, start_at)
    if status in (MessageStatus.QUEUED, MessageStatus.SENDING):
        return Wait(WaitReason.SENDING)
    if status is MessageStatus.RETRYING or (attempts > 0 and not_before > now):
        return Wait(WaitReason.RETRY, not_before)
    if window is not None and not is_window_open(window, client_timezone, now):
        opening = next_window_open(window, client_timezone, now)
        return Wait(WaitReason.SEND_WINDOW, opening, client_timezone)
    if not_before > now:
        # The window was closed when the message was made and opens at `not_before`.
        if window is not None:
            return Wait(WaitReason.SEND_WINDOW, not_before, client_timezone)
        return Wait(WaitReason.RETRY, not_before)
    return Wait(WaitReason.IN_LINE)


def describe(wait: Wait, admin_timezone: str = "UTC") -> str:
    """English sentence for the API (the console translates the reason itself)."""
    if wait.reason is WaitReason.SEND_WINDOW and wait.until is not None:
        zone = wait.timezone or "UTC"
        local = wait.until.astimezone(ZoneInfo(zone))
        return f"send window closed until {local:%H:%M} in the client's zone ({zone})"
    if wait.reason is WaitReason.RETRY and wait.until is not None:
        local = wait.until.astimezone(ZoneInfo(admin_timezone))
        return f"a retry is due at {local:%H:%M} ({admin_timezone})"
    if wait.reason is WaitReason.SCHEDULED and wait.until is not None:
        local = wait.until.astimezone(ZoneInfo(admin_timezone))
        return f"the mailing starts at {local:%Y-%m-%d %H:%M} ({admin_timezone})"
    return {
        WaitReason.PAUSED: "the mailing is paused",
        WaitReason.IN_LINE: "due now, waiting for its turn in the send queue",
        WaitReason.SENDING: "being sent",
        WaitReason.SCHEDULED: "the mailing has not started",
        WaitReason.RETRY: "waiting for a retry",
        WaitReason.SEND_WINDOW: "send window closed",
    }[wait.reason]
