"""Resend a mailing's failed messages: `POST /mailings/{id}/retry-failed`.

Its `failed` messages become `pending` again, due now, with their attempts starting over, in
one UPDATE (the per-status counters move in the same statement, by the `message` triggers);
sent, expired and cancelled messages never change. A completed mailing runs again.
"""

from __future__ import annotations

import structlog
from pydantic import BaseModel, Field
from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import audit
from services.api.deps import AdminActorDep, EventsDep, SessionDep
from services.api.errors import Conflict
from services.api.mailings.service import get_mailing
from services.api.openapi import api_router
from services.api.pagination import ResourceId
from services.api.principal import Actor
from shared.db import database_now
from shared.domain.lifecycle import S, sql
from shared.domain.mailing_times import broken_time_rule
from shared.domain.statuses import MailingStatus

log = structlog.get_logger("api.mailings")

RETRY_FAILED = text(f"""
    UPDATE message SET status = {sql(S.PENDING)}, attempts = 0, last_error = NULL, token = NULL,
        lease_until = NULL, not_before = now(), updated_at = now()
    WHERE mailing_id = :mailing_id AND status = {sql(S.FAILED)} AND NOT is_test
""")


class RetryOut(BaseModel):
    mailing_id: int = Field(examples=[7])
    retried: int = Field(description="Failed messages made due again", examples=[120])
    status: MailingStatus = Field(description="The mailing's status now", examples=["running"])


async def retry_failed(session: AsyncSession, mailing_id: int, *, actor: Actor) -> RetryOut:
    mailing = await get_mailing(session, mailing_id, lock=True)
    if mailing.status == MailingStatus.CANCELLED:
        raise Conflict(f"mailing {mailing_id} is cancelled; its messages are not sent again")
    if broken_time_rule(end_at=mailing.end_at, now=await database_now(session)):
        raise Conflict(
            f"mailing {mailing_id} has reached its end time; extend end_at to send again"
        )
    retried = (await session.execute(RETRY_FAILED, {"mailing_id": mailing_id})).rowcount  # type: ignore[attr-defined]
    if retried and mailing.status == MailingStatus.COMPLETED:
        mailing.status = MailingStatus.RUNNING
        mailing.completed_at = None
    if retried:
        mailing.updated_at = func.now()
    await audit.record(session, actor, "retry_failed", "mailing", mailing_id, {"retried": retried})
    await session.commit()
    await session.refresh(mailing)
    log.info("failed messages retried", mailing_id=mailing_id, retried=retried)
    return RetryOut(mailing_id=mailing_id, retried=retried, status=MailingStatus(mailing.status))


router = api_router(prefix="/mailings", tags=["mailings"])


@router.post("/{mailing_id}/retry-failed", response_model=RetryOut)
async def retry_failed_messages(
    mailing_id: ResourceId, session: SessionDep, events: EventsDep, actor: AdminActorDep
) -> RetryOut:
    """Send the mailing's failed messages again (attempts start over) while its end time has
    not come; a completed mailing runs again. Sent, expired and cancelled messages stay."""
    result = await retry_failed(session, mailing_id, actor=actor)
    if result.retried:
        await events.mailing_changed("updated", mailing_id)
    return result
