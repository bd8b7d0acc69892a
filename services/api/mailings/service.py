"""Mailings: create (idempotently), read, change within the rules, pause, resume, delete."""

from __future__ import annotations

import hashlib
from datetime import datetime

import structlog
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import audit, idempotency
from services.api.auth import Forbidden
from services.api.errors import Conflict, NotFound, Unprocessable
from services.api.mailings.check import Draft, count_recipients, presend_check
from services.api.mailings.schemas import (
    MailingCheck,
    MailingClone,
    MailingCreate,
    MailingFilter,
    MailingPatch,
)
from services.api.principal import Actor
from shared.db import database_now
from shared.domain.mailing_times import TimeRule, broken_time_rule
from shared.domain.statuses import MAILING_FINAL_STATUSES, MailingStatus
from shared.models import Mailing, Message

log = structlog.get_logger("api.mailings")

# Fixed once a mailing has started: they decide who gets it and when (and, transactional,
# whether its messages hold reservations against the frequency caps).
FIXED_AFTER_START = ("start_at", "filter", "send_window", "transactional")
# An edit to any of these before the start sends an approved mailing back for approval.
NEEDS_APPROVAL_AGAIN = (
    "start_at",
    "end_at",
    "text",
    "filter",
    "send_window",
    "transactional",
    "frequency_cap",
)
# Statuses a mailing that has not started may be in; approval decides between the first two.
NOT_STARTED = (MailingStatus.SCHEDULED, MailingStatus.AWAITING_APPROVAL, MailingStatus.PAUSED)


async def _end_in_future(session: AsyncSession, end_at: datetime) -> None:
    rule = broken_time_rule(end_at=end_at, now=await database_now(session))
    if rule is not None:
        raise Unprocessable(rule)


def _fingerprint(data: MailingCreate) -> str:
    # Fields added later (frequency caps) count only when set, so a retry of a request made
    # before they existed still matches its fingerprint.
    later = {name for name in ("transactional", "frequency_cap") if not getattr(data, name)}
    return hashlib.sha256(data.model_dump_json(exclude=later).encode()).hexdigest()


async def get_mailing(session: AsyncSession, mailing_id: int, *, lock: bool = False) -> Mailing:
    query = select(Mailing).where(Mailing.id == mailing_id, Mailing.deleted_at.is_(None))
    mailing = await session.scalar(query.with_for_update() if lock else query)
    if mailing is None:
        raise NotFound("mailing", mailing_id)
    return mailing


async def list_mailings(
    session: AsyncSession,
    *,
    limit: int,
    after_id: int,
    status: MailingStatus | None,
    search: str | None = None,
    before_id: int | None = None,
) -> list[Mailing]:
    """Keyset pages by id: ascending after `after_id`, or newest first below `before_id`.
    `search` matches the text (case-insensitive) or the id."""
    query = select(Mailing).where(Mailing.deleted_at.is_(None))
    if status is not None:
        query = query.where(Mailing.status == status)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        matches = Mailing.text.ilike(pattern)
        query = query.where(
            or_(matches, Mailing.id == int(search))
            if search.isascii() and search.isdigit() and len(search) <= 18  # not "²": int() fails
            else matches
        )
    if before_id is not None:
        query = query.where(Mailing.id < before_id).order_by(Mailing.id.desc())
    else:
        query = query.where(Mailing.id > after_id).order_by(Mailing.id)
    return list(await session.scalars(query.limit(limit)))


def _audit_fields(mailing: Mailing) -> dict[str, object]:
    """What the audit log records of a mailing's settings."""
    return {
        "start_at": mailing.start_at,
        "end_at": mailing.end_at,
        "text": mailing.text,
        "filter": {"operator_codes": mailing.filter_operator_codes, "tags": mailing.filter_tags},
        "send_window": _window(mailing),
        "transactional": bool(mailing.transactional),
        "frequency_cap": mailing.frequency_cap,
    }


def _window(mailing: Mailing) -> dict[str, str] | None:
    if mailing.send_window_start is None or mailing.send_window_end is None:
        return None
    return {
        "start": mailing.send_window_start.strftime("%H:%M"),
        "end": mailing.send_window_end.strftime("%H:%M"),
    }


async def create_mailing(
    session: AsyncSession,
    data: MailingCreate,
    idempotency_key: str | None,
    *,
    actor: Actor,
    approval_threshold: int | None = None,
    frequency_cap: str | None = None,
) -> tuple[Mailing, bool, MailingCheck]:
    """Returns the mailing, whether it was created before under the same key, and its
    pre-send check. Over `approval_threshold` recipients it is created `awaiting_approval`."""
    await _end_in_future(session, data.end_at)
    fingerprint = _fingerprint(data) if idempotency_key else None
    if idempotency_key is not None:
        earlier = await _by_idempotency_key(session, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier, True, await _check(session, earlier, approval_threshold, frequency_cap)
    window = data.send_window.as_times() if data.send_window else (None, None)
    mailing = Mailing(
        start_at=data.start_at,
        end_at=data.end_at,
        text=data.text,
        filter_operator_codes=data.filter.operator_codes,
        filter_tags=data.filter.tags,
        send_window_start=window[0],
        send_window_end=window[1],
        idempotency_key=idempotency_key,
        idempotency_fingerprint=fingerprint,
        created_by=actor.name,
        transactional=data.transactional,
        frequency_cap=data.frequency_cap,
    )
    check = await _check(session, mailing, approval_threshold, frequency_cap)
    needed = check.approval.needed
    mailing.status = MailingStatus.AWAITING_APPROVAL if needed else MailingStatus.SCHEDULED
    session.add(mailing)
    try:
        await session.flush()
        await audit.record(
            session,
            actor,
            "create",
            "mailing",
            mailing.id,
            {**_audit_fields(mailing), **_approval_fields(mailing, check)},
        )
        await session.commit()
    except IntegrityError:
        # A concurrent retry with the same key won the race: answer with its mailing.
        await session.rollback()
        if idempotency_key is None:
            raise
        earlier = await _by_idempotency_key(session, idempotency_key, fingerprint)
        if earlier is None:
            raise
        return earlier, True, await _check(session, earlier, approval_threshold, frequency_cap)
    await session.refresh(mailing)
    log.info(
        "mailing created",
        mailing_id=mailing.id,
        start_at=str(mailing.start_at),
        end_at=str(mailing.end_at),
        status=mailing.status,
    )
    return mailing, False, check


async def _check(
    session: AsyncSession,
    mailing: Mailing,
    approval_threshold: int | None,
    frequency_cap: str | None = None,
) -> MailingCheck:
    return await presend_check(
        session, Draft.of(mailing), threshold=approval_threshold, frequency_cap=frequency_cap
    )


def _approval_fields(mailing: Mailing, check: MailingCheck) -> dict[str, object]:
    """What the audit log records of the approval rule at a create (a clone)."""
    if check.approval.threshold is None:
        return {}
    return {
        "status": mailing.status,
        "recipients": check.recipients.final,
        "approval_threshold": check.approval.threshold,
    }


async def _by_idempotency_key(
    session: AsyncSession, key: str, fingerprint: str | None
) -> Mailing | None:
    mailing = await idempotency.by_key(session, Mailing, key)
    if mailing is None:
        return None
    idempotency.replayed(
        mailing, fingerprint, fingerprint_column="idempotency_fingerprint", what="request body"
    )
    if mailing.deleted_at is not None:
        raise Conflict(f"Idempotency-Key belongs to mailing {mailing.id}, which was deleted")
    return mailing


async def patch_mailing(
    session: AsyncSession,
    mailing_id: int,
    data: MailingPatch,
    *,
    actor: Actor,
    approval_threshold: int | None = None,
    frequency_cap: str | None = None,
) -> tuple[Mailing, MailingCheck]:
    """The changed mailing and its pre-send check. Before the start, an edit of its text,
    filter or times decides approval again: over `approval_threshold` recipients it goes
    (back) to `awaiting_approval`, under it an awaiting one becomes `scheduled`."""
    changes = data.model_dump(exclude_unset=True)
    mailing = await get_mailing(session, mailing_id, lock=True)
    before = _audit_fields(mailing)
    if mailing.status in MAILING_FINAL_STATUSES:
        raise Conflict(f"mailing {mailing_id} is {mailing.status} and can no longer change")
    fixed = [name for name in FIXED_AFTER_START if name in changes]
    if mailing.started_at is not None and fixed:
        raise Conflict(f"mailing {mailing_id} has started: {', '.join(fixed)} can no longer change")
    # Read before the changes: a read would flush them, and a broken rule with them.
    now = await database_now(session) if "end_at" in changes else None
    for name in ("start_at", "end_at", "text"):
        if changes.get(name) is not None:
            setattr(mailing, name, getattr(data, name))
    if "filter" in changes:
        new_filter = data.filter or MailingFilter()
        mailing.filter_operator_codes = new_filter.operator_codes
        mailing.filter_tags = new_filter.tags
    if "send_window" in changes:
        start, end = data.send_window.as_times() if data.send_window else (None, None)
        mailing.send_window_start, mailing.send_window_end = start, end
    if changes.get("transactional") is not None:
        mailing.transactional = bool(data.transactional)
    if "frequency_cap" in changes:
        mailing.frequency_cap = data.frequency_cap
    rule = broken_time_rule(start_at=mailing.start_at, end_at=mailing.end_at, now=now)
    if rule is TimeRule.END_IN_FUTURE:
        raise Unprocessable(f"{rule}; to stop a mailing, pause or delete it")
    if rule is not None:
        raise Unprocessable(rule)
    mailing.updated_at = func.now()
    after = _audit_fields(mailing)
    changed: dict[str, object] = {
        name: {"old": before[name], "new": after[name]}
        for name in after
        if before[name] != after[name]
    }
    check = await _check(session, mailing, approval_threshold, frequency_cap)
    if mailing.started_at is None and any(name in changed for name in NEEDS_APPROVAL_AGAIN):
        status = _status_after_edit(MailingStatus(mailing.status), check)
        if status != mailing.status:
            changed["status"] = {"old": mailing.status, "new": status}
            changed["recipients"] = check.recipients.final
            mailing.status = status
        if status == MailingStatus.AWAITING_APPROVAL:
            mailing.approved_by, mailing.approved_at = None, None
    await audit.record(session, actor, "update", "mailing", mailing_id, changed)
    await session.commit()
    await session.refresh(mailing)
    log.info("mailing updated", mailing_id=mailing.id, fields=sorted(changes))
    return mailing, check


def _status_after_edit(status: MailingStatus, check: MailingCheck) -> MailingStatus:
    if check.approval.needed and status in NOT_STARTED:
        return MailingStatus.AWAITING_APPROVAL
    if not check.approval.needed and status == MailingStatus.AWAITING_APPROVAL:
        return MailingStatus.SCHEDULED
    return status


async def approve_mailing(session: AsyncSession, mailing_id: int, *, actor: Actor) -> Mailing:
    """An admin other than its creator lets a mailing awaiting approval start: at its start
    time, or at once if that has passed (while its end time has not)."""
    mailing = await get_mailing(session, mailing_id, lock=True)
    if mailing.status != MailingStatus.AWAITING_APPROVAL:
        raise Conflict(
            f"mailing {mailing_id} is {mailing.status}; only one awaiting approval can be approved"
        )
    if mailing.created_by == actor.name:
        raise Forbidden(
            f"{actor.name!r} created mailing {mailing_id}: another admin must approve it"
        )
    if broken_time_rule(end_at=mailing.end_at, now=await database_now(session)):
        raise Conflict(
            f"mailing {mailing_id}'s end time has passed: change start_at and end_at,"
            " then approve it"
        )
    mailing.approved_by = actor.name
    mailing.approved_at = func.now()
    return await _set_status(
        session, mailing, MailingStatus.SCHEDULED, actor=actor, action="approve"
    )


async def pause_mailing(session: AsyncSession, mailing_id: int, *, actor: Actor) -> Mailing:
    mailing = await get_mailing(session, mailing_id, lock=True)
    if mailing.status not in (MailingStatus.SCHEDULED, MailingStatus.RUNNING, MailingStatus.PAUSED):
        raise Conflict(f"mailing {mailing_id} is {mailing.status}; only a live one can pause")
    return await _set_status(session, mailing, MailingStatus.PAUSED, actor=actor, action="pause")


async def resume_mailing(session: AsyncSession, mailing_id: int, *, actor: Actor) -> Mailing:
    mailing = await get_mailing(session, mailing_id, lock=True)
    if mailing.status in MAILING_FINAL_STATUSES:
        raise Conflict(f"mailing {mailing_id} is {mailing.status} and cannot resume")
    if mailing.status != MailingStatus.PAUSED:
        return mailing
    started = mailing.started_at is not None
    return await _set_status(
        session,
        mailing,
        MailingStatus.RUNNING if started else MailingStatus.SCHEDULED,
        actor=actor,
        action="resume",
    )


async def _set_status(
    session: AsyncSession, mailing: Mailing, status: MailingStatus, *, actor: Actor, action: str
) -> Mailing:
    await audit.record(
        session,
        actor,
        action,
        "mailing",
        mailing.id,
        {"status": {"old": mailing.status, "new": status}},
    )
    mailing.status = status
    mailing.updated_at = func.now()
    await session.commit()
    await session.refresh(mailing)
    log.info("mailing status changed", mailing_id=mailing.id, status=status)
    return mailing


async def cancel_mailing(session: AsyncSession, mailing_id: int, *, actor: Actor) -> Mailing:
    """Stop a mailing for good; it stays visible with its statistics. As for a delete, senders
    refuse its messages from this commit on and the scheduler cancels the undelivered ones."""
    mailing = await get_mailing(session, mailing_id, lock=True)
    if mailing.status == MailingStatus.CANCELLED:
        return mailing
    if mailing.status == MailingStatus.COMPLETED:
        raise Conflict(f"mailing {mailing_id} is completed: there is nothing left to cancel")
    return await _set_status(
        session, mailing, MailingStatus.CANCELLED, actor=actor, action="cancel"
    )


async def clone_mailing(
    session: AsyncSession,
    mailing_id: int,
    data: MailingClone,
    *,
    actor: Actor,
    approval_threshold: int | None = None,
    frequency_cap: str | None = None,
) -> Mailing:
    """A new scheduled mailing with the original's text, filter, send window and frequency
    settings (transactional, its own cap) (awaiting
    approval when over `approval_threshold` recipients, as a created one)."""
    original = await get_mailing(session, mailing_id)
    await _end_in_future(session, data.end_at)
    mailing = Mailing(
        start_at=data.start_at,
        end_at=data.end_at,
        text=original.text,
        filter_operator_codes=list(original.filter_operator_codes),
        filter_tags=list(original.filter_tags),
        send_window_start=original.send_window_start,
        send_window_end=original.send_window_end,
        created_by=actor.name,
        transactional=original.transactional,
        frequency_cap=original.frequency_cap,
    )
    check = await _check(session, mailing, approval_threshold, frequency_cap)
    needed = check.approval.needed
    mailing.status = MailingStatus.AWAITING_APPROVAL if needed else MailingStatus.SCHEDULED
    session.add(mailing)
    await session.flush()
    await audit.record(
        session,
        actor,
        "clone",
        "mailing",
        mailing.id,
        {"cloned_from": mailing_id, **_audit_fields(mailing), **_approval_fields(mailing, check)},
    )
    await session.commit()
    await session.refresh(mailing)
    log.info("mailing cloned", mailing_id=mailing.id, cloned_from=mailing_id)
    return mailing


async def delete_mailing(session: AsyncSession, mailing_id: int, *, actor: Actor) -> None:
    """Soft delete. Senders refuse its messages from this commit on; the scheduler marks the
    undelivered ones `cancelled` in chunks (a million-row update has no place in a request)."""
    mailing = await get_mailing(session, mailing_id, lock=True)
    await audit.record(session, actor, "delete", "mailing", mailing_id, {"status": mailing.status})
    mailing.deleted_at = func.now()
    if mailing.status != MailingStatus.COMPLETED:
        mailing.status = MailingStatus.CANCELLED
    mailing.updated_at = func.now()
    await session.commit()
    log.info("mailing deleted", mailing_id=mailing_id)


async def count_matching_clients(session: AsyncSession, mailing_filter: MailingFilter) -> int:
    """The clients a mailing with this filter would reach (the check's `final`)."""
    return (await count_recipients(session, mailing_filter)).final


async def list_messages(
    session: AsyncSession, mailing_id: int, *, status: str | None, limit: int, after_id: int
) -> list[Message]:
    await get_mailing(session, mailing_id)
    query = select(Message).where(
        Message.mailing_id == mailing_id, Message.id > after_id, Message.is_test.is_(False)
    )
    if status is not None:
        query = query.where(Message.status == status)
    return list(await session.scalars(query.order_by(Message.id).limit(limit)))
