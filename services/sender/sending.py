"""Claim and send: one micro-batch from its claim to its results.

Per batch: one claim statement, concurrent provider requests (each waiting for a connection,
then checked against the lease and the end time at the moment it starts), and results written
a few milliseconds after each answer, many per statement. The outcome of each request is the
pure policy's (`services.sender.outcome`); this module feeds the breaker and the adaptive
connection limit, logs, and requeues retries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import structlog
from aiolimiter import AsyncLimiter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import outcome, store
from services.sender.breaker import Breaker, State
from services.sender.budget import ClaimBudget, Share
from services.sender.intake import Message, finish
from services.sender.limit import ConcurrencyLimit
from services.sender.provider import Outcome, ProviderClient, SendResult
from services.sender.results import ResultWriter
from services.sender.routing import Router
from shared import metrics, tracing
from shared.domain.retry import JITTER
from shared.domain.statuses import MessageStatus
from shared.messaging import Job, Topology, delay_ms, jobs_message, packed, publish_many
from shared.providers import DEFAULT_NAME
from shared.settings import SenderSettings

log = structlog.get_logger("sender")
S = MessageStatus
# Requests at once before the provider has answered (at start, after the breaker opened).
SLOW_START_CONNECTIONS = 4


def claim_budget(settings: SenderSettings) -> int:
    """How many messages a sender may hold claimed: what its connections (and rate limit)
    start well within the sending lease."""
    budget = 2 * settings.max_connections
    if settings.rate_limit_per_s is not None:
        budget = min(budget, int(settings.rate_limit_per_s * settings.sending_lease_s / 4))
    return max(budget, 1)


class ClaimAndSend:
    def __init__(
        self,
        settings: SenderSettings,
        sessions: async_sessionmaker[AsyncSession],
        provider: ProviderClient,
        topology: Topology | None = None,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.provider = provider
        # PROVIDERS_FILE: each message by its route (services.sender.routing), each provider
        # with its own breaker; this one's breaker then stays closed.
        self.router = router
        self.topology = topology
        self.policy = outcome.Policy.from_settings(settings)
        self.breaker = Breaker(
            threshold=settings.breaker_failure_threshold,
            cooldown_s=settings.breaker_cooldown_s,
            max_cooldown_s=settings.breaker_max_cooldown_s,
        )
        self.limiter = (
            AsyncLimiter(settings.rate_limit_per_s, 1) if settings.rate_limit_per_s else None
        )
        self.connections = ConcurrencyLimit(
            initial=SLOW_START_CONNECTIONS, maximum=settings.max_connections
        )
        self.budget = ClaimBudget(claim_budget(settings))
        self.writer = ResultWriter(self._write_batch, linger_s=0.005, max_batch=500)
        # Mailings with claimed messages in this process, and those of them an admin stopped.
        self.held: Counter[int] = Counter()
        self.stopped: dict[int, MessageStatus] = {}
        self.provider_target = tracing.HttpTarget.of(settings.provider_url)

    @property
    def batch_size(self) -> int:
        # A batch must fit in half the claim budget, so the next one is claimed while this one
        # is sending (a budget-sized batch would wait for its predecessor to finish).
        return max(1, min(self.settings.batch_size, self.budget.size // 2))

    async def process(self, batch: list[Message]) -> None:
        if not self.breaker.allows_traffic():
            await self._release([m.job for m in batch])
            await finish(batch)
            return
        share = await self.budget.take(len(batch))
        try:
            with self._batch_span(batch):
                await self._claim_and_send(batch, share)
        except Exception:
            # A bug, not a fault (those are retried inside): ack what is left rather than hold
            # the jobs forever; their leases lapse and the reaper queues the messages again.
            log.exception("batch failed; its unfinished messages come back when leases lapse")
            await finish([m for m in batch if not m.finished])
        finally:
            share.give_all()

    @staticmethod
    def _batch_span(batch: list[Message]) -> tracing.SpanScope:
        """The claim batch's span: under the first job's publish span, linked to the others'."""
        if not tracing.enabled():
            return tracing.OFF
        traces = list({id(m.envelope): m.envelope.trace for m in batch}.values())
        mailings = sorted({m.job.mailing_id for m in batch})
        return tracing.span(
            "claim batch",
            parent=traces[0],
            kind=SpanKind.CONSUMER,
            links=[t for t in traces[1:] if t is not None],
            attributes=lambda: {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.batch.message_count": len(batch),
                **(
                    {tracing.MAILING_ID: mailings[0]}
                    if len(mailings) == 1
                    else {"mailing.ids": mailings}
                ),
            },
        )

    async def _claim_and_send(self, batch: list[Message], share: Share) -> None:
        sending, unsent = await self._claim(batch)
        share.give(len(unsent))
        await finish(unsent)
        if not sending:
            return
        for m in sending:
            self.held[m.job.mailing_id] += 1
        try:
            await self._send_claimed(sending, share)
        finally:
            for m in sending:
                self.held[m.job.mailing_id] -= 1
                if self.held[m.job.mailing_id] <= 0:
                    del self.held[m.job.mailing_id]

    async def _claim(self, batch: list[Message]) -> tuple[list[Message], list[Message]]:
        """Claim the batch: (the messages now ours to send, those to finish at once: stale
        tokens, duplicates of a redelivered job, messages not to be sent now)."""
        claimed = await store.with_retry(
            self.sessions,
            lambda s: store.claim(
                s,
                [m.job for m in batch],
                margin_s=self.settings.end_safety_margin_s,
                lease_s=self.settings.sending_lease_s,
                frequency_cap=self.settings.frequency_cap,
            ),
            "claim",
        )
        by_key: dict[tuple[int, int], Message] = {}
        unsent: list[Message] = []
        for m in batch:
            if m.key in by_key:
                unsent.append(m)
            else:
                by_key[m.key] = m
        sending: list[Message] = []
        for c in claimed:
            m = by_key.pop((c.message_id, c.token))
            if c.status is S.SENDING:
                m.claimed = c
                sending.append(m)
                continue
            unsent.append(m)
            metrics.JOBS_DROPPED.labels(c.status).inc()
            log.info(
                "message not sent",
                message_id=c.message_id,
                mailing_id=c.mailing_id,
                client_id=c.client_id,
                status=c.status,
            )
        unsent.extend(by_key.values())
        if len(claimed) < len(batch):
            metrics.JOBS_DROPPED.labels("stale").inc(len(batch) - len(claimed))
        return sending, unsent

    async def _send_claimed(self, sending: list[Message], share: Share) -> None:
        async def done(m: Message, result: store.Result) -> None:
            share.give()  # no longer waiting to start: room for the next claim
            await self.writer.submit(result)
            await finish([m])

        async def send_and_finish(m: Message) -> None:
            await done(m, await self._send_one(m))

        if self.breaker.state == State.HALF_OPEN:
            # Probe with one request before letting the rest through.
            await send_and_finish(sending[0])
            rest = sending[1:]
            if self.breaker.state != State.CLOSED:
                await asyncio.gather(*(done(m, self._released(m)) for m in rest))
                return
            sending = rest
        await asyncio.gather(*(send_and_finish(m) for m in sending))

    async def _send_one(self, m: Message) -> store.Result:
        if self.router is not None:
            # Each provider bounds its own requests (an SMPP window, the curl pool).
            return await self._send_now(m)
        # Wait for a connection here, not in the HTTP pool, so the end-time check below is made
        # when the request really starts.
        await self.connections.acquire()
        try:
            return await self._send_now(m)
        finally:
            self.connections.release()

    async def _send_now(self, m: Message) -> store.Result:
        c = m.claimed
        assert c is not None
        if not self.breaker.allows_traffic():
            return self._released(m)
        # A test send goes whatever its mailing's status (pausing a mailing stops its run).
        stopped = None if c.is_test else self.stopped.get(c.mailing_id)
        if stopped is not None:
            metrics.JOBS_DROPPED.labels(stopped).inc()
            return outcome.stopped(c, stopped)
        if self.router is not None:
            return await self.router.send(c, self.policy)
        if self.limiter is not None:
            await self.limiter.acquire()
        now = time.monotonic()
        unsent = outcome.before_request(c, now=now, policy=self.policy)
        if unsent is not None:
            if unsent.why == "lease_lapsing":
                metrics.JOBS_DROPPED.labels("lease_lapsing").inc()
            return unsent
        started = time.perf_counter()
        # The client checks the last start (the lease's or the end time's) again as it writes
        # the request: a loop turn, or on a starved machine a good part of a second, from now.
        with self._request_span(m) as span:
            answer = await self.provider.send(
                c.message_id,
                c.phone,
                c.text,
                outcome.seconds_to_end(c, now),
                start_by=outcome.start_by(c, self.policy),
            )
            if span is not None:
                tracing.provider_answer(span, answer.outcome, answer.error, answer.status)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        self._feed_breaker(answer)
        result = outcome.after_answer(
            c,
            answer,
            now=time.monotonic(),
            policy=self.policy,
            jitter=random.uniform(1 - JITTER, 1 + JITTER),
            release_delay_s=self._release_delay(),
        )
        if answer.outcome is Outcome.NOT_SENT:
            # The end time's last start ("not_written") or the lease's came before the write.
            metrics.JOBS_DROPPED.labels(
                "lease_lapsing" if result.why == "lease_lapsing" else "not_written"
            ).inc()
        self._log(m, answer, result, latency_ms)
        if result.status is S.SENT:
            # The one `default` provider; its id for the message is ours.
            return replace(result, provider=DEFAULT_NAME, provider_message_id=str(c.message_id))
        return result

    def _request_span(self, m: Message) -> tracing.SpanScope:
        """The provider request's client span (OTel HTTP client conventions)."""
        if not tracing.enabled():
            return tracing.OFF
        return tracing.span(
            "POST /send/{msgId}",
            parent=tracing.parent_for(m.envelope.trace),
            kind=SpanKind.CLIENT,
            # Built only for a sampled span: most spans are not, at a low sampling ratio.
            attributes=lambda: tracing.provider_request_attributes(
                self.provider_target, self.settings.provider_url, m.job.mailing_id, m.job.message_id
            ),
        )

    def _feed_breaker(self, answer: SendResult) -> None:
        if answer.outcome is Outcome.NOT_SENT:
            return  # not a request: its last start passed before it was written
        if answer.outcome in (Outcome.SENT, Outcome.REJECTED):
            self.breaker.record_success()  # a rejection too: the provider is up
            self.connections.grow()
        elif answer.outcome is Outcome.UNAUTHORIZED:
            self.breaker.open("unauthorized")
            self.connections.reset()
        elif self.breaker.record_failure():
            self.connections.reset()
            log.warning("provider failing; breaker open", cooldown_s=self.breaker.cooldown)

    def _log(self, m: Message, answer: SendResult, result: store.Result, latency_ms: float) -> None:
        fields: dict[str, object] = {
            "message_id": m.job.message_id,
            "mailing_id": m.job.mailing_id,
            "client_id": m.claimed.client_id if m.claimed else None,
            "latency_ms": latency_ms,
        }
        if m.envelope.request_id is not None:
            fields["request_id"] = m.envelope.request_id
        if answer.outcome is Outcome.SENT:
            log.info("provider accepted message", **fields)
        elif answer.outcome is Outcome.UNAUTHORIZED:
            log.error(
                "ALERT provider refused our token; sending paused until it changes",
                **fields,
                error=answer.error,
            )
        elif result.why == "rejected":
            log.warning("provider rejected message", **fields, error=answer.error)
        elif result.why == "exhausted":
            log.warning("message failed: retries exhausted", **fields, error=answer.error)
        elif result.status is S.EXPIRED:
            log.info("message expired: no time left to retry", **fields, error=answer.error)
        elif result.why == "lease_lapsing":
            log.info("message given back unsent: its lease could not cover the request", **fields)
        else:
            log.info(
                "message will be retried",
                **fields,
                error=answer.error,
                delay_s=result.delay_s,
                attempt=(m.claimed.attempts if m.claimed else 0) + 1,
            )

    def _release_delay(self) -> float:
        return max(self.breaker.reopens_at - time.monotonic(), 0.0)

    def _released(self, m: Message) -> store.Result:
        assert m.claimed is not None
        return outcome.released(m.claimed, self._release_delay())

    async def _release(self, jobs: list[Job]) -> None:
        delay = self._release_delay()
        await store.with_retry(
            self.sessions, lambda s: store.release(s, jobs, delay_s=delay), "release"
        )
        metrics.JOBS_DROPPED.labels("breaker_open").inc(len(jobs))

    # --- results ---------------------------------------------------------------------------

    async def _write_batch(self, results: Sequence[store.Result]) -> dict[int, MessageStatus]:
        written = await store.with_retry(
            self.sessions,
            lambda s: store.write_results(s, results, lease_s=self.settings.sending_lease_s),
            "write results",
        )
        for r in results:
            if written.get(r.message_id) is not None:
                metrics.MESSAGES_FINISHED.labels(r.status).inc()
        retries = [r for r in results if written.get(r.message_id) is S.RETRYING]
        if retries:
            await self._publish_retries(retries)
        return written

    async def _publish_retries(self, retries: Sequence[store.Result]) -> None:
        """One job per mailing and delay tier (and MESSAGES_PER_JOB messages)."""
        assert self.topology is not None
        jobs = packed(
            retries, lambda r: (r.mailing_id, delay_ms(r.delay_s)), self.settings.messages_per_job
        )
        errors = await publish_many(
            self.topology.retry_exchange,
            (
                (
                    jobs_message(
                        mailing_id,
                        ((r.message_id, r.token) for r in job),
                        expiration_s=None,
                        # The retry's claim and request stay in the mailing's trace.
                        headers={"mailing_id": mailing_id} | tracing.mailing_headers(mailing_id),
                    ),
                    str(tier_ms),
                )
                for (mailing_id, tier_ms), job in jobs
            ),
        )
        failed = sum(error is not None for error in errors)
        if failed:
            # Their lease lapses after the delay and the scheduler queues them again.
            log.warning("retry publish failed; the scheduler will re-queue", failed=failed)
