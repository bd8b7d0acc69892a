"""Lifecycle states of mailings and messages."""

from __future__ import annotations

from enum import StrEnum


class MailingStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its start time
    # Over APPROVAL_THRESHOLD recipients: waits for an admin other than its creator to approve.
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"  # started: messages are being created and sent
    PAUSED = "paused"  # an admin stopped delivery; resume continues it
    COMPLETED = "completed"  # every message reached a terminal status
    CANCELLED = "cancelled"  # cancelled or deleted by an admin; undelivered messages cancelled


class MessageStatus(StrEnum):
    PENDING = "pending"  # created, waiting for its turn (or its send window)
    QUEUED = "queued"  # leased by the scheduler and published to the send queue
    SENDING = "sending"  # claimed by a sender, the provider request is under way
    SENT = "sent"  # the provider accepted it
    RETRYING = "retrying"  # a retryable failure; waiting in a retry queue
    FAILED = "failed"  # the provider refused it for good, or retries ran out
    EXPIRED = "expired"  # the mailing's end time came before it could be sent
    CANCELLED = "cancelled"  # its mailing or client was deleted
    # After `sent`, from the provider's delivery receipt (SMPP, Kannel; the fabrique kind has
    # none, so its messages stay `sent`): `sent` means "accepted, receipt not yet in".
    DELIVERED = "delivered"  # the receipt says the phone got it
    UNDELIVERED = "undelivered"  # the receipt says it was not delivered (expired, rejected…)


MESSAGE_TERMINAL_STATUSES = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.FAILED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
    }
)
MESSAGE_OPEN_STATUSES = tuple(s for s in MessageStatus if s not in MESSAGE_TERMINAL_STATUSES)
MAILING_FINAL_STATUSES = frozenset({MailingStatus.COMPLETED, MailingStatus.CANCELLED})
