"""Test sends: `POST /mailings/{id}/test` sends the mailing's text to one phone, now.

The test is one `message` row (`is_test`, its own `phone`, no client) that takes the real path:
the scheduler leases it (whatever the mailing's status), a sender claims it, calls the
provider, retries it on the ladder and feeds the breaker. No counter or statistic of the
mailing counts it (migration 0006), and it has a deadline of its own
(`shared.domain.test_send`). At most `TEST_SENDS_PER_MINUTE` per token (or console user):
counted from the audit log, which every api replica shares, under a per-actor advisory lock so
that concurrent requests cannot both take the last one.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import audit
from services.api.clients.schemas import Phone
from services.api.deps import AdminActorDep, EventsDep, SessionDep, SettingsDep
from services.api.errors import Conflict, NotFound, TooManyRequests
from services.api.mailings.service import get_mailing
from services.api.openapi import api_router
from services.api.pagination import AfterId, Limit, ResourceId, next_after_id
from services.api.principal import Actor
from services.api.schemas import ErrorResponse, InputModel, Page
from shared.domain import test_send
from shared.domain.clients import mask_phone
from shared.domain.statuses import MailingStatus, MessageStatus
from shared.models import Client, Message

log = structlog.get_logger("api.mailings")

ACTION = "test_send"
WINDOW_S = 60

# The actor's test sends in the last minute, newest first (ix_audit_log_at: a minute of rows).
RECENT = text("""
    SELECT at, now() AS now FROM audit_log
    WHERE action = :action AND actor_kind = :kind AND actor_name = :name
      AND at > now() - make_interval(secs => :window)
    ORDER BY id DESC
    LIMIT :limit
""")
LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class TestSendIn(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"phone": "79123456789"}]})

    phone: Phone = Field(description="Where the test goes: 7 followed by 10 digits")


class TestMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="The test message's id (the provider's msgId)", examples=[1042])
    mailing_id: int = Field(examples=[7])
    phone: str = Field(examples=["79123456789"])
    status: MessageStatus = Field(
        description="`pending` → `queued` → `sending` → `sent`; or `retrying`, `failed`, "
        "`expired` (not sent before its deadline), `cancelled` (the mailing was deleted)",
        examples=["sent"],
    )
    attempts: int = Field(description="Provider requests made so far", examples=[2])
    last_error: str | None = Field(examples=["HTTP 500"])
    created_at: datetime
    queued_at: datetime | None
    sent_at: datetime | None
    updated_at: datetime

    @computed_field(description="It is not tried after this moment")  # type: ignore[prop-decorator]
    @property
    def deadline(self) -> datetime:
        return test_send.deadline(self.created_at)


TestMessageId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The test message's id")]

# `message` is partitioned by mailing id (migration 0007). The mailing's insert trigger made
# its partition; retention may have dropped it since (a finished mailing tested months later):
# this makes it again, and returns at once when it is there.
ENSURE_PARTITION = text("SELECT message_partition_ensure(CAST(:mailing_id AS bigint))")


async def send_test(
    session: AsyncSession, mailing_id: int, phone: str, *, actor: Actor, per_minute: int
) -> Message:
    """Create a test send of the mailing's text to `phone` (committed, with its audit entry)."""
    mailing = await get_mailing(session, mailing_id)
    if mailing.status == MailingStatus.CANCELLED:
        raise Conflict(f"mailing {mailing_id} is cancelled; clone it to test its text")
    opted_out = await session.scalar(
        select(Client.id).where(
            Client.phone == phone, Client.deleted_at.is_(None), Client.opted_out_at.is_not(None)
        )
    )
    if opted_out is not None:
        raise Conflict(f"phone {mask_phone(phone)} belongs to a client who opted out")
    # One actor's test sends take turns here, on every replica: the count below is exact.
    await session.execute(LOCK, {"key": f"{ACTION}:{actor.kind}:{actor.name}"})
    recent = (
        await session.execute(
            RECENT,
            {
                "action": ACTION,
                "kind": actor.kind,
                "name": actor.name,
                "window": WINDOW_S,
                "limit": per_minute,
            },
        )
    ).all()
    if len(recent) >= per_minute:
        # When the oldest of these leaves the minute, one more is allowed.
        wait = (recent[-1].at - recent[-1].now).total_seconds() + WINDOW_S
        raise TooManyRequests(
            f"at most {per_minute} test sends per minute for {actor.name}; try again later",
            retry_after_s=max(1, math.ceil(wait)),
        )
    await session.execute(ENSURE_PARTITION, {"mailing_id": mailing_id})
    message = Message(mailing_id=mailing_id, is_test=True, phone=phone, client_id=None)
    session.add(message)
    await session.flush()
    await audit.record(
        session, actor, ACTION, "mailing", mailing_id, {"message_id": message.id, "phone": phone}
    )
    await session.commit()
    await session.refresh(message)
    log.info("test send created", mailing_id=mailing_id, message_id=message.id)
    return message


async def get_test(session: AsyncSession, mailing_id: int, message_id: int) -> Message:
    await get_mailing(session, mailing_id)
    message = await session.scalar(
        select(Message).where(
            Message.id == message_id, Message.mailing_id == mailing_id, Message.is_test
        )
    )
    if message is None:
        raise NotFound("test message", message_id)
    return message


async def list_tests(
    session: AsyncSession, mailing_id: int, *, limit: int, after_id: int
) -> list[Message]:
    """Oldest first. `client_id IS NULL` reads them off the (mailing_id, client_id) index."""
    await get_mailing(session, mailing_id)
    query = (
        select(Message)
        .where(
            Message.mailing_id == mailing_id,
            Message.client_id.is_(None),
            Message.is_test,
            Message.id > after_id,
        )
        .order_by(Message.id)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def recent_tests(session: AsyncSession, mailing_id: int, *, limit: int) -> list[Message]:
    """The newest first (the console's list)."""
    query = (
        select(Message)
        .where(Message.mailing_id == mailing_id, Message.client_id.is_(None), Message.is_test)
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return list(await session.scalars(query))


router = api_router(prefix="/mailings", tags=["mailings"])

TOO_MANY = {
    "model": ErrorResponse,
    "description": "More than `TEST_SENDS_PER_MINUTE` test sends in the last minute by this "
    "token; `Retry-After` says in how many seconds one more is allowed",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    "content": {
        "application/json": {
            "example": {"detail": "at most 10 test sends per minute for ci; try again later"}
        }
    },
}


@router.post(
    "/{mailing_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TestMessageOut,
    responses={429: TOO_MANY},
)
async def send_test_message(
    mailing_id: ResourceId,
    body: TestSendIn,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
    response: Response,
    actor: AdminActorDep,
) -> TestMessageOut:
    """Send the mailing's current text to one phone now, through the real sending path
    (provider, retries, circuit breaker), whatever the mailing's status, start time or send
    window. The test is not counted in the mailing's statistics; read its status at
    `Location`. It is tried for 10 minutes at most, then `expired`. A cancelled mailing, or a
    phone of a client who opted out, is 409; more than `TEST_SENDS_PER_MINUTE` (default 10)
    per token in a minute is 429 with `Retry-After`."""
    message = await send_test(
        session, mailing_id, body.phone, actor=actor, per_minute=settings.test_sends_per_minute
    )
    response.headers["Location"] = f"/api/v1/mailings/{mailing_id}/tests/{message.id}"
    await events.mailing_changed("test", mailing_id)
    return TestMessageOut.model_validate(message)


@router.get("/{mailing_id}/tests", response_model=Page[TestMessageOut])
async def list_test_messages(
    mailing_id: ResourceId, session: SessionDep, limit: Limit = 100, after_id: AfterId = 0
) -> Page[TestMessageOut]:
    """The mailing's test sends, oldest first."""
    messages = await list_tests(session, mailing_id, limit=limit, after_id=after_id)
    return Page[TestMessageOut](
        items=[TestMessageOut.model_validate(m) for m in messages],
        next_after_id=next_after_id([m.id for m in messages], limit),
    )


@router.get("/{mailing_id}/tests/{message_id}", response_model=TestMessageOut)
async def get_test_message(
    mailing_id: ResourceId, message_id: TestMessageId, session: SessionDep
) -> TestMessageOut:
    """One test send: its status, attempts and last error."""
    return TestMessageOut.model_validate(await get_test(session, mailing_id, message_id))
