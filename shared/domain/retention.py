"""Message retention: when a mailing's messages may go (docs/RETENTION.md).

A mailing is finished when its status is final (`completed`, or `cancelled`: cancelled or
deleted); it finished at the latest of its own timestamps that mark the end: `completed_at`,
`deleted_at` and `updated_at` (which every status change, edit and delete moves, so a mailing
edited after it ended is kept longer, never shorter). Its messages may be dropped once it
finished more than MESSAGE_RETENTION_DAYS ago. Its statistics (`message_count`) stay.

Python form for the tests and the logs, SQL form for the scheduler's retention: both here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.domain.lifecycle import sql_in
from shared.domain.statuses import MAILING_FINAL_STATUSES, MailingStatus

# The console's dashboard reads today's and the last hour's `message_minute` rows: "today" in
# the viewer's zone began at most 24 hours (plus a DST hour) ago; two days keep it whole.
MESSAGE_MINUTE_KEEP = timedelta(days=2)


def finished_at(
    status: MailingStatus | str,
    *,
    completed_at: datetime | None,
    deleted_at: datetime | None,
    updated_at: datetime,
) -> datetime | None:
    """When the mailing finished; None while it is not finished (it may still send)."""
    if MailingStatus(status) not in MAILING_FINAL_STATUSES:
        return None
    return max(t for t in (completed_at, deleted_at, updated_at) if t is not None)


def finished_at_sql(mailing: str) -> str:
    """`finished_at` of the mailing row aliased `mailing`, NULL while not finished."""
    return (
        f"CASE WHEN {mailing}.status IN ({sql_in(sorted(MAILING_FINAL_STATUSES))})"
        f" THEN greatest({mailing}.completed_at, {mailing}.deleted_at, {mailing}.updated_at) END"
    )


def retention_cutoff(now: datetime, retention_days: float) -> datetime:
    """Mailings finished before this moment have their messages dropped."""
    return now - timedelta(days=retention_days)


def may_drop(finished: datetime | None, cutoff: datetime) -> bool:
    return finished is not None and finished < cutoff
