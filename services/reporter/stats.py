"""The day's statistics per mailing, read from the per-mailing counters and a bounded scan.

A mailing is in the report for a day when it started that day or any of its messages changed
that day. Counts by status come from `message_count` (the counters the triggers keep, so no
GROUP BY over millions of rows) and are as of the moment the report is made. "Sent that day"
counts the mailing's `sent` messages whose `sent_at` falls in the day: the range predicate on a
bare column rides the `(mailing_id, status, id)` index, so only that mailing's sent messages are
visited, never the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.schedule import day_bounds
from shared.domain.statuses import MessageStatus

STATUSES: tuple[str, ...] = tuple(s.value for s in MessageStatus)

# Candidates come from the mailing table alone: started before the day ended and not completed
# before it began. A deleted (cancelled) mailing never gets `completed_at`; the scheduler cancels
# its open messages within minutes of the delete, so one deleted more than a day before the
# report day is left out instead of having its messages scanned every day forever.
# Of those, a mailing that started on an earlier day must have a message updated in the day;
# EXISTS stops at the first such message.
ACTIVE_MAILINGS = text("""
    SELECT mg.id, mg.text, mg.status, mg.start_at, mg.end_at, mg.started_at, mg.completed_at,
           mg.deleted_at,
           (SELECT count(*) FROM message m
             WHERE m.mailing_id = mg.id AND m.status = 'sent' AND NOT m.is_test
               AND m.sent_at >= :day_start AND m.sent_at < :day_end) AS sent_in_day
    FROM mailing mg
    WHERE mg.started_at < :day_end
      AND (mg.completed_at IS NULL OR mg.completed_at >= :day_start)
      AND (mg.deleted_at IS NULL OR mg.deleted_at >= :day_start - interval '1 day')
      AND (mg.started_at >= :day_start
           OR EXISTS (SELECT 1 FROM message m
                       WHERE m.mailing_id = mg.id AND NOT m.is_test
                         AND m.updated_at >= :day_start AND m.updated_at < :day_end))
    ORDER BY mg.id
""")

COUNTS = text("""
    SELECT mailing_id, status, count FROM message_count WHERE mailing_id IN :ids
""").bindparams(bindparam("ids", expanding=True))


@dataclass(frozen=True)
class MailingDay:
    id: int
    text: str
    status: str
    start_at: datetime
    end_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    deleted_at: datetime | None
    sent_in_day: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)


@dataclass(frozen=True)
class DailyReport:
    day: date
    generated_at: datetime
    mailings: list[MailingDay]

    @property
    def sent_in_day(self) -> int:
        return sum(m.sent_in_day for m in self.mailings)

    def total(self, status: str) -> int:
        return sum(m.count(status) for m in self.mailings)


async def collect(engine: AsyncEngine, day: date) -> DailyReport:
    day_start, day_end = day_bounds(day)
    # One snapshot for both queries, so the numbers agree with each other.
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        generated_at = (await conn.execute(text("SELECT now()"))).scalar_one()
        rows = (
            await conn.execute(ACTIVE_MAILINGS, {"day_start": day_start, "day_end": day_end})
        ).all()
        counts: dict[int, dict[str, int]] = {row.id: {} for row in rows}
        if counts:
            for mailing_id, status, count in await conn.execute(COUNTS, {"ids": list(counts)}):
                if count:
                    counts[mailing_id][status] = int(count)
        await conn.rollback()
    mailings = [
        MailingDay(
            id=row.id,
            text=row.text,
            status=row.status,
            start_at=row.start_at,
            end_at=row.end_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            deleted_at=row.deleted_at,
            sent_in_day=int(row.sent_in_day),
            counts=counts[row.id],
        )
        for row in rows
    ]
    return DailyReport(day=day, generated_at=generated_at, mailings=mailings)
