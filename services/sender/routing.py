"""Sending by route (PROVIDERS_FILE): each message to a provider its operator code routes to.

Without PROVIDERS_FILE the sender does not use this module: one `default` provider, as before.
With it, `Router.send` picks the provider per message, at send time, from the current
configuration (`ProvidersSource`, re-read when the file changes):

- the route's providers in order (`via: best [...]`: ranked by their delivered rate for the
  operator code, `shared.domain.best_route`, fed by the receipts this replica stores);
- a provider that "cannot take messages" is passed over: its breaker is open, its binds are
  down (smpp), or it refused the account (401/403 from kannel or fabrique: its breaker opens);
- a route with no provider left: the message is given back unsent (pending, no attempt
  spent) and waits, as a message does while the single provider's breaker is open;
- each provider's `max_tps` is shared among the live senders (`provider_status` heartbeats,
  `services.sender.status_report`): this replica's `TokenBucket` runs at max_tps / live.

SMPP answers: accepted -> sent (the first part's SMSC id recorded); throttled -> retried soon
(the bind itself slows down); permanent -> failed with the error code; transient and unknown
(sent, no answer) -> the usual retry, like a fabrique timeout; expired -> expired; unavailable
-> the next provider. Kannel answers the same way. Receipts and replies that come on the SMPP
binds are stored in batches (`shared.receipts`, `shared.replies`) before they are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.sender import outcome, provider_report, smpp, status_report
from services.sender.breaker import Breaker
from services.sender.curl import CurlMulti
from services.sender.kannel import KannelClient
from services.sender.provider import Outcome, ProviderClient, SendResult, TokenSource
from services.sender.rate import TokenBucket
from services.sender.store import Claimed, Result
from shared import metrics
from shared.domain import best_route
from shared.domain.end_time import END_REACHED
from shared.domain.sms_text import SmsParts, split_sms
from shared.domain.statuses import MessageStatus
from shared.providers import (
    FabriqueProvider,
    Provider,
    ProvidersConfig,
    ProvidersSource,
    SmppProvider,
)
from shared.receipts import Receipt, apply_receipts, match_pending
from shared.replies import Reply, record_replies
from shared.settings import SenderSettings

log = structlog.get_logger("sender.routing")
S = MessageStatus
T = TypeVar("T")

# A message whose route has no provider that can take it waits this long before it is due
# again (the scheduler queues it then).
NO_PROVIDER_DELAY_S = 1.0
# Sent messages remembered for the best-route rates (provider id -> operator code).
REMEMBERED = 100_000

LIVE_SENDERS = text(
    "SELECT count(*) FROM provider_status WHERE reported_at > now() - make_interval(secs => :ttl)"
)


class Batcher(Generic[T]):
    """Items from many callers written together: each caller returns once its item is
    stored, or raises when the write failed (an SMPP receipt is then not acknowledged, and
    the SMSC sends it again)."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[None]], *, linger_s: float, max_batch: int
    ) -> None:
        self._write = write
        self._linger = linger_s
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()

    async def submit(self, item: T) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        await future

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._pending) < self._max:
                await asyncio.sleep(self._linger)
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            if not self._pending:
                self._wakeup.clear()
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:
                log.warning("could not store a batch", error=str(exc)[:200], size=len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


@dataclass
class Slot:
    """One provider in this replica: its client, breaker and rate."""

    provider: Provider
    breaker: Breaker
    bucket: TokenBucket | None
    fabrique: ProviderClient | None = None
    smpp: smpp.SmppClient | None = None
    kannel: KannelClient | None = None

    @property
    def name(self) -> str:
        return self.provider.name

    def can_take(self) -> bool:
        if not self.breaker.allows_traffic():
            return False
        return self.smpp is None or self.smpp.can_take

    async def close(self, drain_timeout_s: float) -> None:
        if self.smpp is not None:
            await self.smpp.close(drain_timeout_s)
        if self.fabrique is not None:
            await self.fabrique.close()


class Router:
    def __init__(
        self,
        settings: SenderSettings,
        source: ProvidersSource,
        sessions: async_sessionmaker[AsyncSession],
        *,
        curl: CurlMulti | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sessions = sessions
        self.curl = curl or CurlMulti(max_connections=settings.max_connections, keepalive_s=5.0)
        self.rng = rng or random.Random()
        self.slots: dict[str, Slot] = {}
        self.rates = best_route.DeliveryRates()
        self.live_senders = 1
        self._codes: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.receipts: Batcher[Receipt] = Batcher(
            self._store_receipts, linger_s=0.01, max_batch=1000
        )
        self.replies: Batcher[Reply] = Batcher(self._store_replies, linger_s=0.01, max_batch=200)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._closing_slots: set[asyncio.Task[None]] = set()

    # --- providers -----------------------------------------------------------------------------

    def _breaker(self) -> Breaker:
        s = self.settings
        return Breaker(
            threshold=s.breaker_failure_threshold,
            cooldown_s=s.breaker_cooldown_s,
            max_cooldown_s=s.breaker_max_cooldown_s,
        )

    def _slot(self, provider: Provider) -> Slot:
        bucket = TokenBucket(provider.max_tps) if provider.max_tps else None
        slot = Slot(provider, self._breaker(), bucket)
        if isinstance(provider, FabriqueProvider):
            token = provider.token.get_secret_value() if provider.token else None
            slot.fabrique = ProviderClient(
                provider.url,
                TokenSource(token, None),
                timeout_s=self.settings.provider_timeout_s,
                max_connections=self.settings.max_connections,
            )
        elif isinstance(provider, SmppProvider):
            slot.smpp = smpp.SmppClient(provider, self._on_deliver)
            slot.smpp.start()
        else:
            slot.kannel = KannelClient(
                provider, self.curl, timeout_s=self.settings.provider_timeout_s
            )
        self._share(slot)
        return slot

    def configure(self, config: ProvidersConfig) -> list[Slot]:
        """Make the slots match `config`; returns the replaced ones (to close)."""
        old = self.slots
        slots: dict[str, Slot] = {}
        for name, provider in config.providers.items():
            kept = old.get(name)
            slots[name] = (
                kept if kept is not None and kept.provider == provider else self._slot(provider)
            )
        self.slots = slots
        return [slot for name, slot in old.items() if slots.get(name) is not slot]

    async def start(self) -> None:
        """The clients (binds start connecting) and the tasks; the live senders are counted
        first, so no bucket starts at the whole max_tps beside other replicas."""
        await self._count_senders()
        self.configure(self.source.current)
        self._tasks = [
            asyncio.create_task(self.receipts.run(), name="receipts"),
            asyncio.create_task(self.replies.run(), name="replies"),
            asyncio.create_task(self._match_pending(), name="match-pending"),
            asyncio.create_task(self._watch(), name="providers-watch"),
            asyncio.create_task(self._watch_senders(), name="live-senders"),
            # provider_state for GET /api/v1/providers (services/sender/provider_report.py)
            asyncio.create_task(provider_report.Reporter(self).run(), name="provider-report"),
        ]
        log.info("routing by providers file", providers=sorted(self.slots))

    async def wait_bound(self, timeout_s: float = 10.0) -> bool:
        clients = [s.smpp for s in self.slots.values() if s.smpp is not None]
        results = await asyncio.gather(*(c.wait_bound(timeout_s) for c in clients))
        return all(results)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.source.refresh():
                for slot in self.configure(self.source.current):
                    task = asyncio.create_task(slot.close(self.settings.provider_timeout_s))
                    self._closing_slots.add(task)
                    task.add_done_callback(self._closing_slots.discard)

    def _share(self, slot: Slot) -> None:
        if slot.bucket is not None and slot.provider.max_tps:
            slot.bucket.rate = slot.provider.max_tps / max(self.live_senders, 1)
            metrics.PROVIDER_RATE_SHARE.labels(slot.name).set(slot.bucket.rate)

    async def _count_senders(self) -> None:
        try:
            async with self.sessions() as session:
                live = await session.scalar(
                    LIVE_SENDERS,
                    {"ttl": self.settings.sender_heartbeat_ttl_s, "me": status_report.INSTANCE},
                )
        except Exception as exc:
            # The last count stays: a share too small or too large for a moment, not a stop.
            log.warning("could not count live senders", error=str(exc)[:200])
            return
        self.live_senders = max(int(live or 0), 1)
        for slot in self.slots.values():
            self._share(slot)

    async def _watch_senders(self) -> None:
        """max_tps / live senders: each replica's share (docs/PROVIDERS.md)."""
        while True:
            await asyncio.sleep(1.0)
            await self._count_senders()

    async def _match_pending(self) -> None:
        while True:
            await asyncio.sleep(self.settings.receipt_match_interval_s)
            try:
                async with self.sessions() as session:
                    matched, dropped = await match_pending(
                        session, hold_s=self.settings.receipt_hold_s
                    )
                if matched or dropped:
                    log.info("pending receipts", matched=matched, dropped_unknown=dropped)
            except Exception as exc:
                log.warning("could not match pending receipts", error=str(exc)[:200])

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """SIGTERM: the windows drain, then every bind unbinds; then the store tasks stop."""
        self._closing = True
        await asyncio.gather(*(s.close(drain_timeout_s) for s in self.slots.values()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.curl.close()

    # --- receipts and replies ------------------------------------------------------------------

    async def _on_deliver(self, delivery: smpp.Delivery) -> None:
        if isinstance(delivery, smpp.Receipt):
            if not delivery.final:
                return  # ENROUTE, ACCEPTD: nothing to record
            error = None
            if not delivery.delivered:
                error = delivery.stat  # UNDELIV, EXPIRED, REJECTD, DELETED (+ the SMSC's code)
                if delivery.error_code:
                    error = f"{error} err:{delivery.error_code}"
            await self.receipts.submit(
                Receipt(delivery.provider, delivery.message_id, delivery.delivered, error)
            )
            code = self._codes.pop((delivery.provider, delivery.message_id), None)
            if code is not None:
                self.rates.record(delivery.provider, code, delivered=delivery.delivered)
        else:
            await self.replies.submit(Reply(delivery.provider, delivery.source, delivery.text))

    async def _store_receipts(self, receipts: list[Receipt]) -> None:
        async with self.sessions() as session:
            await apply_receipts(session, receipts)

    async def _store_replies(self, replies: list[Reply]) -> None:
        async with self.sessions() as session:
            await record_replies(session, replies, self.settings.stop_words)

    def _remember(self, provider: str, provider_id: str, code: str) -> None:
        self._codes[(provider, provider_id)] = code
        if len(self._codes) > REMEMBERED:
            self._codes.popitem(last=False)

    # --- sending -------------------------------------------------------------------------------

    def order(self, config: ProvidersConfig, code: str) -> tuple[list[Slot], bool]:
        """The route's providers in the order to try them, and whether that order is a best
        route's ranking (not a scouting pick nor a written order) to check again later."""
        route = config.route_of(code)
        if route is None:
            return [], False
        names = list(route.via)
        ranked = False
        if route.best:
            names = best_route.choose(names, code, self.rates, rng=self.rng)
            ranked = names == best_route.rank(list(route.via), code, self.rates)
        return [self.slots[n] for n in names if n in self.slots], ranked

    async def send(self, c: Claimed, policy: outcome.Policy) -> Result:
        """Send one claimed message by its route; the result to write."""
        tried: list[str] = []
        slots, ranked = self.order(self.source.current, c.operator_code)
        parts = split_sms(c.text)
        while slots:
            slot = slots.pop(0)
            if self._closing or not slot.can_take():
                continue
            if slot.bucket is not None:
                await slot.bucket.acquire(parts.count)
                if ranked and slots:
                    # A best route's choice is made again after the wait: receipts that came
                    # meanwhile may have ranked another provider first (its turn is then
                    # taken from its own rate; this one's is left unused).
                    now_best = max(
                        [slot, *slots], key=lambda s: self.rates.rate(s.name, c.operator_code)
                    )
                    if now_best is not slot and now_best.can_take():
                        slots.remove(now_best)
                        slots[:0] = [now_best, slot]
                        ranked = False
                        continue
            tried.append(slot.name)
            result = await self._send_via(slot, c, policy, parts)
            if result is not None:
                return result
        log.info(
            "no provider can take the message; it waits",
            message_id=c.message_id,
            operator_code=c.operator_code,
            tried=tried,
        )
        return outcome.released(c, NO_PROVIDER_DELAY_S)

    async def _send_via(
        self, slot: Slot, c: Claimed, policy: outcome.Policy, parts: SmsParts
    ) -> Result | None:
        """The result of sending through `slot` (its rate already waited for), or None when it
        could not take the message (the next provider of the route should)."""
        if slot.fabrique is not None:
            return await self._fabrique(slot, c, policy)
        now = time.monotonic()
        unsent = outcome.before_request(c, now=now, policy=policy)
        if unsent is not None:
            return unsent
        valid_until = datetime.now(UTC) + timedelta(seconds=outcome.seconds_to_end(c, now))
        if slot.smpp is not None:
            answer = await slot.smpp.submit(c.phone, c.text, valid_until=valid_until, parts=parts)
        else:
            assert slot.kannel is not None
            answer = await slot.kannel.submit(
                str(c.message_id), c.phone, c.text, valid_until=valid_until
            )
        return self._after_submit(slot, c, answer, policy)

    def _after_submit(
        self, slot: Slot, c: Claimed, answer: smpp.SubmitResult, policy: outcome.Policy
    ) -> Result | None:
        o = smpp.SubmitOutcome
        if answer.outcome in (o.ACCEPTED, o.PERMANENT, o.THROTTLED):
            slot.breaker.record_success()  # it answered: up
        if answer.outcome is o.ACCEPTED:
            provider_id = answer.message_id
            if provider_id is not None:
                self._remember(slot.name, provider_id, c.operator_code)
            return replace(
                outcome.after_answer(
                    c, SendResult(Outcome.SENT), now=time.monotonic(), policy=policy
                ),
                provider=slot.name,
                provider_message_id=provider_id,
            )
        if answer.outcome is o.UNAVAILABLE:
            if slot.kannel is not None and answer.error and answer.error[5:8] in ("401", "403"):
                slot.breaker.open("account refused")
            return None
        if answer.outcome is o.EXPIRED:
            return _expired(c)
        if answer.outcome is o.PERMANENT:
            send = SendResult(Outcome.REJECTED, answer.error)
        elif answer.outcome is o.THROTTLED:
            send = SendResult(Outcome.RETRY, answer.error, retry_after=answer.retry_after_s)
        else:  # transient, unknown: as a fabrique failure or timeout
            slot.breaker.record_failure()
            send = SendResult(Outcome.RETRY, answer.error)
        result = outcome.after_answer(
            c,
            send,
            now=time.monotonic(),
            policy=policy,
            jitter=random.uniform(0.8, 1.2),
        )
        if answer.outcome is o.THROTTLED and result.status is S.RETRYING:
            # The SMSC asked us to slow down, not refused the message: no attempt is spent,
            # so a long throttle does not fail messages (the end time still expires them).
            return replace(result, attempted=0)
        return result

    async def _fabrique(self, slot: Slot, c: Claimed, policy: outcome.Policy) -> Result | None:
        assert slot.fabrique is not None
        now = time.monotonic()
        unsent = outcome.before_request(c, now=now, policy=policy)
        if unsent is not None:
            return unsent
        answer = await slot.fabrique.send(
            c.message_id,
            c.phone,
            c.text,
            outcome.seconds_to_end(c, now),
            start_by=outcome.start_by(c, policy),
        )
        if answer.outcome is Outcome.UNAUTHORIZED:
            slot.breaker.open("unauthorized")
            return None  # the account is refused: the next provider
        if answer.outcome in (Outcome.SENT, Outcome.REJECTED):
            slot.breaker.record_success()
        elif answer.outcome is Outcome.RETRY:
            slot.breaker.record_failure()
        result = outcome.after_answer(
            c,
            answer,
            now=time.monotonic(),
            policy=policy,
            jitter=random.uniform(0.8, 1.2),
        )
        if result.status is S.SENT:
            return replace(result, provider=slot.name, provider_message_id=str(c.message_id))
        return result


def _expired(c: Claimed) -> Result:
    """Not sent: the end time is too close (the SMSC's validity could not hold it)."""
    return Result(c.message_id, c.mailing_id, c.token, S.EXPIRED, END_REACHED, 0.0, 0, "expired")


def slots_state(router: Router) -> Sequence[dict[str, object]]:
    """For logs and the providers' state: no secret in it."""
    return [
        {
            "name": s.name,
            "kind": s.provider.kind,
            "breaker": s.breaker.state.name.lower(),
            "rate": s.bucket.rate if s.bucket else None,
            **(s.smpp.state if s.smpp else {}),
        }
        for s in router.slots.values()
    ]
