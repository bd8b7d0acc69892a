"""Publishing leased messages: one confirmed broker message per job of one mailing's leases,
carrying the request id and trace of the mailing; what the broker refused is due again at once."""

from __future__ import annotations

from collections import Counter

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import leasing
from shared import metrics, tracing
from shared.messaging import SEND_ROUTING_KEY, Topology, jobs_message, packed, publish_many

log = structlog.get_logger("scheduler")


async def publish_leases(
    topology: Topology,
    leases: list[leasing.Lease],
    *,
    messages_per_job: int,
    request_ids: dict[int, str],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One confirmed broker message per `messages_per_job` leases of one mailing; the leases
    of jobs the broker refused are given back at once."""
    jobs = [job for _, job in packed(leases, lambda lease: lease.mailing_id, messages_per_job)]
    spans = tracing.PublishSpans(topology.names.send, (job[0].mailing_id for job in jobs))
    errors = await publish_many(
        topology.send_exchange,
        (
            (
                jobs_message(
                    job[0].mailing_id,
                    ((lease.message_id, lease.token) for lease in job),
                    expiration_s=min(lease.seconds_left for lease in job),
                    headers=job_headers(request_ids, job[0].mailing_id)
                    | spans.headers(job[0].mailing_id),
                ),
                SEND_ROUTING_KEY,
            )
            for job in jobs
        ),
    )
    spans.end(job[0].mailing_id for job, error in zip(jobs, errors, strict=True) if error)
    for job, error in zip(jobs, errors, strict=True):
        request_id = request_ids.get(job[0].mailing_id)
        for lease in job:
            log.info(
                "message queued" if error is None else "publish failed",
                message_id=lease.message_id,
                mailing_id=lease.mailing_id,
                reaped=lease.reaped,
                request_id=request_id,
            )
    reaped = sum(lease.reaped for lease in leases)
    metrics.MESSAGES_QUEUED.labels("new").inc(len(leases) - reaped)
    metrics.MESSAGES_QUEUED.labels("reaped").inc(reaped)
    if reaped:
        log.warning("re-published messages whose lease lapsed", count=reaped)
    unpublished = [lease for job, error in zip(jobs, errors, strict=True) if error for lease in job]
    if unpublished:
        first = next(error for error in errors if error is not None)
        await return_unpublished(sessions, unpublished, first)


async def return_unpublished(
    sessions: async_sessionmaker[AsyncSession], leases: list[leasing.Lease], error: BaseException
) -> None:
    """Jobs the broker refused: their messages are due again at once, so a broker restart
    does not hold the lease cap full of dead leases until they lapse (LEASE_TTL_S)."""
    try:
        async with sessions() as session:
            returned = await leasing.return_unpublished(session, leases)
    except Exception:
        returned = 0
        log.warning("could not return unpublished leases; they lapse instead", exc_info=True)
    metrics.MESSAGES_UNPUBLISHED.inc(returned)
    log.warning(
        "publish failed; messages due again",
        failed=len(leases),
        returned=returned,
        error=repr(error)[:300],
    )


def trace_leases(leases: list[leasing.Lease], started: int, ended: int) -> None:
    """Each mailing's share of one lease transaction, as a span of its trace."""
    leased: Counter[int] = Counter(lease.mailing_id for lease in leases)
    reaped: Counter[int] = Counter(lease.mailing_id for lease in leases if lease.reaped)
    for mailing_id, count in leased.items():
        tracing.record_mailing_span(
            tracing.LEASE,
            mailing_id,
            started,
            ended,
            {"mailing.messages.leased": count, "mailing.messages.reaped": reaped[mailing_id]},
        )


def job_headers(request_ids: dict[int, str], mailing_id: int) -> dict[str, object]:
    request_id = request_ids.get(mailing_id)
    headers: dict[str, object] = {"mailing_id": mailing_id}
    if request_id is not None:
        headers["request_id"] = request_id
    return headers
