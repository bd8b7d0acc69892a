from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response, status

from services.api.deps import AdminActorDep, EventsDep, SessionDep, SettingsDep
from services.api.idempotency import key_header
from services.api.mailings import check, delivery, service, stats
from services.api.mailings.schemas import (
    MailingCheck,
    MailingChecked,
    MailingCheckIn,
    MailingClone,
    MailingCreate,
    MailingOut,
    MailingPatch,
    MailingStatsDetail,
    MessageOut,
    PreviewOut,
    ReplyOut,
    StatsPage,
)
from services.api.openapi import api_router
from services.api.pagination import AfterId, Limit, ResourceId, next_after_id
from services.api.schemas import ErrorResponse, Page
from shared.domain.statuses import MailingStatus, MessageStatus

router = api_router(prefix="/mailings", tags=["mailings"])

IdempotencyKey = Annotated[
    str | None,
    key_header("Retrying a create with the same key returns the first mailing, never a second"),
]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=MailingChecked)
async def create_mailing(
    body: MailingCreate,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
    response: Response,
    actor: AdminActorDep,
    idempotency_key: IdempotencyKey = None,
) -> MailingChecked:
    """Create a mailing. It starts by itself at `start_at` (at once if that has passed) and
    sends nothing after `end_at`. The answer carries its pre-send check (`check`). Over
    APPROVAL_THRESHOLD recipients it is `awaiting_approval` and starts only once another
    admin approves it."""
    mailing, replayed, checked = await service.create_mailing(
        session,
        body,
        idempotency_key,
        actor=actor,
        approval_threshold=settings.approval_threshold,
        frequency_cap=settings.frequency_cap,
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        await events.mailing_changed("created", mailing.id)
    return MailingChecked.with_check(mailing, checked)


@router.get("", response_model=Page[MailingOut])
async def list_mailings(
    session: SessionDep,
    limit: Limit = 100,
    after_id: AfterId = 0,
    status: Annotated[MailingStatus | None, Query()] = None,
) -> Page[MailingOut]:
    mailings = await service.list_mailings(session, limit=limit, after_id=after_id, status=status)
    return Page[MailingOut](
        items=[MailingOut.of(m) for m in mailings],
        next_after_id=next_after_id([m.id for m in mailings], limit),
    )


CHECK_EXAMPLE = {
    "recipients": {"matching": 1250, "opted_out": 12, "over_cap": 0, "final": 1238},
    "text": {"encoding": "UCS-2", "segments": 1, "total_segments": 1238},
    "routes": [
        {
            "provider": "default",
            "recipients": 1238,
            "max_tps": None,
            "finishes_at": None,
            "can_finish": True,
        }
    ],
    "approval": {"threshold": 100000, "needed": False},
}


async def _check(body: MailingCheckIn, session: SessionDep, settings: SettingsDep) -> MailingCheck:
    draft = check.Draft(
        filter=body.filter,
        text=body.text,
        start_at=body.start_at,
        end_at=body.end_at,
        window=body.send_window.window() if body.send_window else None,
        transactional=body.transactional,
        frequency_cap=body.frequency_cap,
    )
    return await check.presend_check(
        session, draft, threshold=settings.approval_threshold, frequency_cap=settings.frequency_cap
    )


@router.post(
    "/check",
    response_model=MailingCheck,
    responses={200: {"content": {"application/json": {"example": CHECK_EXAMPLE}}}},
)
async def check_mailing(
    body: MailingCheckIn, session: SessionDep, settings: SettingsDep
) -> MailingCheck:
    """The pre-send check of a mailing not yet created (the create body; all but the filter
    optional): recipients now (matching the filter, opted out, over the frequency cap,
    final), its text's encoding and segments, for each route how many recipients it gets and
    whether it can finish before `end_at` (a warning, not a refusal), and whether it needs
    approval. Changes nothing."""
    return await _check(body, session, settings)


@router.post(
    "/preview",
    response_model=PreviewOut,
    deprecated=True,
    responses={
        200: {
            "content": {
                "application/json": {"example": {**CHECK_EXAMPLE, "matching_clients": 1238}}
            }
        }
    },
)
async def preview_mailing(
    body: MailingCheckIn, session: SessionDep, settings: SettingsDep
) -> PreviewOut:
    """The old name of `POST /mailings/check`, kept as an alias; its answer also carries
    `matching_clients` (who would get the mailing now: `recipients.final`)."""
    checked = await _check(body, session, settings)
    return PreviewOut(**checked.__dict__, matching_clients=checked.recipients.final)


@router.get("/stats", response_model=StatsPage)
async def list_mailing_stats(
    session: SessionDep, limit: Limit = 100, after_id: AfterId = 0
) -> StatsPage:
    """Every live mailing with its message counts by status, plus totals over all of them."""
    return await stats.stats_page(session, limit=limit, after_id=after_id)


@router.get("/{mailing_id}", response_model=MailingOut)
async def get_mailing(mailing_id: ResourceId, session: SessionDep) -> MailingOut:
    return MailingOut.of(await service.get_mailing(session, mailing_id))


@router.patch("/{mailing_id}", response_model=MailingChecked)
async def patch_mailing(
    mailing_id: ResourceId,
    body: MailingPatch,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
    actor: AdminActorDep,
) -> MailingChecked:
    """Change a mailing. Text and end time apply to messages not yet sent; start time, filter
    and send window can change only before the mailing starts (409 after). The answer carries
    the pre-send check (`check`). Before the start, an edit of text, filter or times decides
    approval again: over APPROVAL_THRESHOLD recipients an approved mailing goes back to
    `awaiting_approval`."""
    mailing, checked = await service.patch_mailing(
        session,
        mailing_id,
        body,
        actor=actor,
        approval_threshold=settings.approval_threshold,
        frequency_cap=settings.frequency_cap,
    )
    await events.mailing_changed("updated", mailing.id)
    return MailingChecked.with_check(mailing, checked)


@router.post(
    "/{mailing_id}/approve",
    response_model=MailingOut,
    responses={
        403: {
            "model": ErrorResponse,
            "description": "A viewer token, or the mailing's creator: another admin must approve",
            "content": {
                "application/json": {
                    "example": {"detail": "'ops' created mailing 12: another admin must approve it"}
                }
            },
        },
        409: {
            "model": ErrorResponse,
            "description": "The mailing is not awaiting approval, or its end time has passed",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "mailing 12 is scheduled; only one awaiting approval can be"
                        " approved"
                    }
                }
            },
        },
    },
)
async def approve_mailing(
    mailing_id: ResourceId, session: SessionDep, events: EventsDep, actor: AdminActorDep
) -> MailingOut:
    """Approve a mailing `awaiting_approval` (over APPROVAL_THRESHOLD recipients): it becomes
    `scheduled` and starts at `start_at`, or at once if that has passed while it waited (409
    if its end time has passed: re-time it, then approve). Its creator cannot approve it
    (403): another admin must."""
    mailing = await service.approve_mailing(session, mailing_id, actor=actor)
    await events.mailing_changed("updated", mailing.id)
    return MailingOut.of(mailing)


@router.delete("/{mailing_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_mailing(
    mailing_id: ResourceId, session: SessionDep, events: EventsDep, actor: AdminActorDep
) -> Response:
    """Cancel and remove a mailing: nothing more is sent; its history stays for audit."""
    await service.delete_mailing(session, mailing_id, actor=actor)
    await events.mailing_changed("deleted", mailing_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{mailing_id}/pause", response_model=MailingOut)
async def pause_mailing(
    mailing_id: ResourceId, session: SessionDep, events: EventsDep, actor: AdminActorDep
) -> MailingOut:
    """Stop delivery; messages already at the provider may still arrive."""
    mailing = await service.pause_mailing(session, mailing_id, actor=actor)
    await events.mailing_changed("updated", mailing.id)
    return MailingOut.of(mailing)


@router.post("/{mailing_id}/resume", response_model=MailingOut)
async def resume_mailing(
    mailing_id: ResourceId, session: SessionDep, events: EventsDep, actor: AdminActorDep
) -> MailingOut:
    mailing = await service.resume_mailing(session, mailing_id, actor=actor)
    await events.mailing_changed("updated", mailing.id)
    return MailingOut.of(mailing)


@router.post("/{mailing_id}/cancel", response_model=MailingOut)
async def cancel_mailing(
    mailing_id: ResourceId, session: SessionDep, events: EventsDep, actor: AdminActorDep
) -> MailingOut:
    """Stop a mailing for good (status `cancelled`): nothing more is sent, its undelivered
    messages become `cancelled`, and it stays visible with its statistics. Cancelling a
    cancelled mailing changes nothing; a completed one is 409."""
    mailing = await service.cancel_mailing(session, mailing_id, actor=actor)
    await events.mailing_changed("updated", mailing.id)
    return MailingOut.of(mailing)


@router.post("/{mailing_id}/clone", status_code=status.HTTP_201_CREATED, response_model=MailingOut)
async def clone_mailing(
    mailing_id: ResourceId,
    body: MailingClone,
    session: SessionDep,
    settings: SettingsDep,
    events: EventsDep,
    response: Response,
    actor: AdminActorDep,
) -> MailingOut:
    """A new `scheduled` mailing with this one's text, filter and send window, running from
    `start_at` to `end_at`. Any mailing can be cloned, a cancelled or completed one too. Over
    APPROVAL_THRESHOLD recipients the copy is `awaiting_approval`, as a created one."""
    mailing = await service.clone_mailing(
        session,
        mailing_id,
        body,
        actor=actor,
        approval_threshold=settings.approval_threshold,
        frequency_cap=settings.frequency_cap,
    )
    response.headers["Location"] = f"/api/v1/mailings/{mailing.id}"
    await events.mailing_changed("created", mailing.id)
    return MailingOut.of(mailing)


@router.get("/{mailing_id}/stats", response_model=MailingStatsDetail)
async def get_mailing_stats(mailing_id: ResourceId, session: SessionDep) -> MailingStatsDetail:
    """Counts by status, timings, `waiting`: why undelivered messages wait (the mailing
    is scheduled or paused, the client's send window is closed until a time in their zone,
    a retry is due later, or they are due now and in line), and `delivery`: the SMSCs'
    receipts (delivered, undelivered, awaiting one, the delivery rate), in all and per
    provider and operator code."""
    return await stats.mailing_stats(session, mailing_id)


@router.get("/{mailing_id}/messages", response_model=Page[MessageOut])
async def list_mailing_messages(
    mailing_id: ResourceId,
    session: SessionDep,
    limit: Limit = 100,
    after_id: AfterId = 0,
    status: Annotated[MessageStatus | None, Query()] = None,
) -> Page[MessageOut]:
    messages = await service.list_messages(
        session, mailing_id, status=status, limit=limit, after_id=after_id
    )
    return Page[MessageOut](
        items=[MessageOut.model_validate(m, from_attributes=True) for m in messages],
        next_after_id=next_after_id([m.id for m in messages], limit),
    )


@router.get("/{mailing_id}/replies", response_model=Page[ReplyOut])
async def list_mailing_replies(
    mailing_id: ResourceId,
    session: SessionDep,
    limit: Limit = 100,
    after_id: AfterId = 0,
) -> Page[ReplyOut]:
    """SMS the mailing's recipients sent back (MO), oldest first: a reply belongs to the
    mailing of its client's latest message. `stop` marks an exact stop word (the client was
    opted out, docs/PROVIDERS.md)."""
    replies = await delivery.list_replies(session, mailing_id, limit=limit, after_id=after_id)
    return Page[ReplyOut](
        items=replies, next_after_id=next_after_id([r.id for r in replies], limit)
    )
