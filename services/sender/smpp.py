"""SMPP 3.4 client for a provider of kind `smpp`, on aiosmpplib (docs/PROVIDERS.md).

`SmppClient` keeps `binds` transceiver binds to one SMSC. Each bind (`SmppBind`) is one
aiosmpplib ESME: enquire_link while idle, reconnect with backoff, and our window: at most
`window` submit_sm awaiting their submit_sm_resp. `submit()` answers a `SubmitResult` with one
`SubmitOutcome` (accepted with the SMSC's id of every part, throttled, permanent, transient,
unavailable = not sent, unknown = sent but no answer). Receipts and replies (deliver_sm) go to
`on_deliver`; their deliver_sm_resp leaves only after it returns, so an SMSC re-sends whatever a
sender did not take before it died.

Texts are split by `shared.domain.sms_text` and every part is its own submit_sm with a
concatenation UDH (one reference) and its own receipt: aiosmpplib's own splitting (SAR TLVs, or
message_payload when `auto_message_payload` is on) is never used.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog
from aiosmpplib import (
    ESME,
    NPI,
    TON,
    AbstractBroker,
    AbstractHook,
    AbstractRetryTimer,
    AbstractThrottleHandler,
    BindMode,
    DeliverSm,
    PhoneNumber,
    SmppCommand,
    SmppCommandStatus,
    SmppMessage,
    SubmitSm,
    SubmitSmResp,
)
from aiosmpplib.correlator import SimpleCorrelator
from aiosmpplib.esme import _SUBMIT_SM_SEGMENT
from aiosmpplib.protocol import MESSAGE_TYPE_MAP, DeliverSmResp
from aiosmpplib.state import COMMAND_RESPONSE_MAP, PduHeader

from shared import metrics
from shared.domain.sms_text import SmsParts, split_sms
from shared.providers import SmppProvider

log = structlog.get_logger("smpp")

ESM_UDHI = 0x40
RECEIPTED_MESSAGE_ID = 0x001E
MESSAGE_STATE = 0x0427
BIND_RESPONSES = {
    SmppCommand.BIND_TRANSCEIVER_RESP,
    SmppCommand.BIND_TRANSMITTER_RESP,
    SmppCommand.BIND_RECEIVER_RESP,
}


class SubmitOutcome(StrEnum):
    ACCEPTED = "accepted"  # every part has the SMSC's message id
    THROTTLED = "throttled"  # ESME_RTHROTTLED / ESME_RMSGQFUL: retry soon, the bind slows down
    PERMANENT = "permanent"  # e.g. ESME_RINVDSTADR: fail the message with the code
    TRANSIENT = "transient"  # any other error: retry by the usual policy
    UNAVAILABLE = "unavailable"  # not sent: no bind up (or closing); another provider may take it
    UNKNOWN = "unknown"  # sent, no answer (bind lost, timeout): a retry may duplicate it
    EXPIRED = "expired"  # not sent: too close to (or past) the mailing's end time


THROTTLING = {SmppCommandStatus.ESME_RTHROTTLED, SmppCommandStatus.ESME_RMSGQFUL}
PERMANENT = {
    SmppCommandStatus.ESME_RINVMSGLEN,
    SmppCommandStatus.ESME_RINVSRCADR,
    SmppCommandStatus.ESME_RINVDSTADR,
    SmppCommandStatus.ESME_RINVESMCLASS,
    SmppCommandStatus.ESME_RINVSRCTON,
    SmppCommandStatus.ESME_RINVSRCNPI,
    SmppCommandStatus.ESME_RINVDSTTON,
    SmppCommandStatus.ESME_RINVDSTNPI,
    SmppCommandStatus.ESME_RINVEXPIRY,
}


def classify(status: SmppCommandStatus) -> SubmitOutcome:
    if status == SmppCommandStatus.ESME_ROK:
        return SubmitOutcome.ACCEPTED
    if status in THROTTLING:
        return SubmitOutcome.THROTTLED
    if status in PERMANENT:
        return SubmitOutcome.PERMANENT
    return SubmitOutcome.TRANSIENT


@dataclass(frozen=True, slots=True)
class SubmitResult:
    outcome: SubmitOutcome
    message_ids: tuple[str, ...] = ()  # the SMSC's id of each accepted part, in part order
    parts: int = 1
    error: str | None = None  # "ESME_RINVDSTADR", "bind down", "no response in 30 s", ...
    command_status: int | None = None
    retry_after_s: float | None = None  # THROTTLED: how long this bind now waits

    @property
    def message_id(self) -> str | None:
        """The id a message is known by (its first part's)."""
        return self.message_ids[0] if self.message_ids else None


# --- deliver_sm: receipts and replies ----------------------------------------------------------

# message_state (SMPP 3.4 5.3.2.35) and the receipt text's stat words (Appendix B).
_STATE_WORDS = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
DELIVERED_WORDS = {"DELIVRD"}
UNDELIVERED_WORDS = {"EXPIRED", "DELETED", "UNDELIV", "REJECTD"}
_RECEIPT_ID = re.compile(r"\bid:(?P<id>\S+)", re.IGNORECASE)
_RECEIPT_STAT = re.compile(r"\bstat:(?P<stat>\S+)", re.IGNORECASE)
_RECEIPT_ERR = re.compile(r"\berr:(?P<err>\S+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Receipt:
    provider: str
    message_id: str  # the SMSC's id, as in its submit_sm_resp
    stat: str  # DELIVRD, UNDELIV, EXPIRED, ...
    error_code: str | None = None

    @property
    def final(self) -> bool:
        return self.stat in DELIVERED_WORDS or self.stat in UNDELIVERED_WORDS

    @property
    def delivered(self) -> bool:
        return self.stat in DELIVERED_WORDS


@dataclass(frozen=True, slots=True)
class Reply:
    """A deliver_sm that is not a receipt: a text from a phone (MO)."""

    provider: str
    source: str  # the phone
    destination: str
    text: str


def parse_receipt(provider: str, tlvs: dict[int, Any], text: str) -> Receipt | None:
    """A receipt from its receipted_message_id and message_state TLVs, else from its text
    ("id:... sub:... stat:DELIVRD err:..."). None when it names no message id."""
    message_id = tlvs.get(RECEIPTED_MESSAGE_ID)
    state = tlvs.get(MESSAGE_STATE)
    id_match = _RECEIPT_ID.search(text)
    stat_match = _RECEIPT_STAT.search(text)
    err_match = _RECEIPT_ERR.search(text)
    if not message_id and id_match:
        message_id = id_match["id"]
    if not message_id:
        return None
    if isinstance(state, int) and state in _STATE_WORDS:
        stat = _STATE_WORDS[state]
    elif stat_match:
        stat = stat_match["stat"].upper()
    else:
        stat = "UNKNOWN"
    return Receipt(provider, str(message_id), stat, err_match["err"] if err_match else None)


Delivery = Receipt | Reply
OnDeliver = Callable[[Delivery], Awaitable[None]]


# --- one bind ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[tuple[SubmitOutcome, SmppCommandStatus | None, str | None]]
    written: bool = False


class _Broker(AbstractBroker):
    """The ESME's queue of PDUs to send; emptied (each request failed as not sent) when the
    bind goes down, so a message never waits for a reconnect it could fail over past."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SmppMessage] = asyncio.Queue()

    async def enqueue(self, message: SmppMessage) -> None:
        self.queue.put_nowait(message)

    async def dequeue(self) -> SmppMessage:
        return await self.queue.get()


class _Correlator(SimpleCorrelator):
    """Request/response pairs only: receipts are matched by message id in the database, so
    nothing is kept per sent message (aiosmpplib's default keeps each for three days)."""

    async def put_delivery(self, smsc_message_id: str, submit_sm: SubmitSm) -> None:
        return None

    async def get_delivery(self, receipt: DeliverSm) -> SubmitSm | None:
        return None


class _Throttle(AbstractThrottleHandler):
    """Slows this bind down after ESME_RTHROTTLED / ESME_RMSGQFUL: the ESME's sending loop waits
    `delay` (doubling to 5 s while throttling continues, halving on each accepted submit)."""

    MIN_S = 0.05
    MAX_S = 5.0

    def __init__(self) -> None:
        self.delay = 0.0
        self.paused_until = 0.0

    async def throttled(self) -> None:
        self.delay = min(self.MAX_S, max(self.MIN_S, self.delay * 2))
        self.paused_until = time.monotonic() + self.delay

    async def not_throttled(self) -> None:
        self.delay = self.delay / 2 if self.delay > self.MIN_S else 0.0

    async def allow_request(self) -> bool:
        return time.monotonic() >= self.paused_until

    async def throttle_delay(self) -> float:
        return max(0.0, self.paused_until - time.monotonic())


class _Reconnect(AbstractRetryTimer):
    """aiosmpplib calls `wait()` after every lost connection or failed bind and `reset()` after
    each bind: the moments our bind goes down and up."""

    def __init__(self, bind: SmppBind, min_s: float, max_s: float) -> None:
        self.bind = bind
        self.min_s = min_s
        self.max_s = max_s
        self.delay = min_s

    def next_delay(self) -> float:
        return self.delay

    async def wait(self) -> None:
        self.bind._down()
        delay = self.delay * random.uniform(0.8, 1.2)
        self.delay = min(self.max_s, self.delay * 2)
        await asyncio.sleep(delay)

    def reset(self) -> None:
        self.delay = self.min_s
        self.bind._up()


class _ToStructlog(logging.Handler):
    """aiosmpplib's own log lines (reconnect errors and the like) into our JSON logs."""

    def __init__(self, bind: str) -> None:
        super().__init__(logging.WARNING)
        self.bind = bind

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        event, _, detail = text.partition(" >>> ")
        write = log.error if record.levelno >= logging.ERROR else log.warning
        write("aiosmpplib: " + event.strip(), bind=self.bind, detail=detail or None)


class _Esme(ESME):
    """aiosmpplib's ESME with one change to its read loop: each deliver_sm is handled in a task
    of its own and its deliver_sm_resp leaves only when our handler has returned (after the
    receipt is stored), so a slow store never stalls the bind's reads nor serialises receipts,
    and a receipt whose handler failed is not acknowledged: the SMSC sends it again.
    At most `deliver_concurrency` are handled at once (then reading waits)."""

    def __init__(self, *args: Any, deliver_concurrency: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver_slots = asyncio.Semaphore(deliver_concurrency)
        self._deliver_tasks: set[asyncio.Task[None]] = set()
        self._session = 0  # which connection a deliver_sm came on: answered on that one only

    async def connect(self) -> None:
        self._session += 1
        await super().connect()

    async def _receive_data(self) -> bytes | None:
        while True:
            if self._is_shutting_down or self._session_state != self.bind_mode.session_state:
                return None
            pdu, header = await self._get_pdu()
            self._data_received.set()  # the connection keeper's "data came"
            if header.smpp_command == SmppCommand.DELIVER_SM:
                await self._deliver_slots.acquire()
                task = asyncio.create_task(self._deliver(pdu, header))
                self._deliver_tasks.add(task)
                task.add_done_callback(self._deliver_tasks.discard)
                continue
            is_request = header.smpp_command in COMMAND_RESPONSE_MAP
            handler = self._handle_request if is_request else self._handle_response
            message = await handler(pdu, header)
            await self.hook.received(
                None if message is _SUBMIT_SM_SEGMENT else message, pdu, self.client_id
            )
            if message is None:
                continue
            if is_request:
                response_class = MESSAGE_TYPE_MAP[COMMAND_RESPONSE_MAP[header.smpp_command]]
                await self._send_data(response_class(header.sequence_num))
            if header.smpp_command == SmppCommand.UNBIND:
                return None  # the SMSC unbinds us: reconnect

    async def _deliver(self, pdu: bytes, header: PduHeader) -> None:
        session = self._session
        try:
            message = await self._handle_request(pdu, header)
            if message is None:
                return  # unparseable: aiosmpplib answered generic_nack
            if message is not _SUBMIT_SM_SEGMENT:  # a part of a long reply: kept until whole
                await self.hook.received(message, pdu, self.client_id)
            if session != self._session or not self._bound.is_set():
                return  # that connection is gone: the SMSC sends it again on another
            await self._send_data(DeliverSmResp(header.sequence_num))
        except Exception:
            log.exception("smpp deliver_sm not acknowledged", client=self.client_id)
        finally:
            self._deliver_slots.release()


class _Hook(AbstractHook):
    def __init__(self, bind: SmppBind) -> None:
        self.bind = bind

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSm) and not isinstance(smpp_message, DeliverSm):
            self.bind._written(smpp_message.log_id)

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSmResp):
            self.bind._answered(
                smpp_message.log_id, smpp_message.command_status, smpp_message.message_id
            )
        elif isinstance(smpp_message, DeliverSm):
            await self.bind._delivered(smpp_message)
        elif len(pdu) >= 16:
            header = SmppMessage.parse_header(pdu[:16])
            if header.smpp_command in BIND_RESPONSES:
                self.bind._bind_answered(header.command_status)

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSm):
            self.bind._not_sent(smpp_message.log_id, f"not sent: {type(error).__name__}")


class SmppBind:
    """One transceiver bind: an aiosmpplib ESME with our window, hook, throttle and reconnect."""

    def __init__(
        self,
        provider: SmppProvider,
        index: int,
        on_deliver: OnDeliver,
        *,
        response_timeout_s: float = 30.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        deliver_concurrency: int = 256,
    ) -> None:
        self.provider = provider
        self.name = f"{provider.name}#{index}"
        self.on_deliver = on_deliver
        self.response_timeout_s = response_timeout_s
        self.bound = False
        self.bind_error: str | None = None  # the last bind refusal, e.g. ESME_RINVPASWD
        self.binds_made = 0
        self._window = asyncio.Semaphore(provider.window)
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._references = itertools.cycle(range(256))
        self._bound_event = asyncio.Event()
        self._drained = asyncio.Event()
        self._broker = _Broker()
        self._throttle = _Throttle()
        self.esme = _Esme(
            smsc_host=provider.host,
            smsc_port=provider.port,
            system_id=provider.system_id,
            password=provider.password.get_secret_value(),
            system_type=provider.system_type,
            bind_mode=BindMode.TRANSCEIVER,
            client_id=self.name,
            enquire_link_interval=provider.enquire_link_s,
            # Its per-PDU logs would cost CPU per message; our own logs say what matters.
            log_level="ERROR",
            log_metadata={"provider": provider.name, "bind": index},
            log_handler=_ToStructlog(self.name),
            log_include_timestamp=False,
            hook=_Hook(self),
            broker=self._broker,
            throttle_handler=self._throttle,
            correlator=_Correlator(self.name),
            retry_timer=_Reconnect(self, reconnect_min_s, reconnect_max_s),
            socket_timeout=10.0,
            deliver_concurrency=deliver_concurrency,
        )
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._binds_up = metrics.PROVIDER_BINDS_UP.labels(provider.name)
        self._binds_up.set(0)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"smpp {self.name}")

    async def _run(self) -> None:
        """aiosmpplib's loop, started again if it dies (it can, when a transport closes under
        it: uvloop refuses `set_write_buffer_limits` on a closed one), so a bind is never left
        marked up with nobody reading it and every submit waiting out its response timeout."""
        delay_s = 0.5
        while not self._closing:
            try:
                await self.esme.start()
            except Exception:
                log.warning(
                    "smpp client loop died; starting it again", bind=self.name, exc_info=True
                )
            self._down()
            if self._closing:
                return
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)

    async def wait_bound(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._bound_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # Events from aiosmpplib (through _Hook and _Reconnect).

    def _up(self) -> None:
        self.bound = True
        self.bind_error = None
        self.binds_made += 1
        self._binds_up.inc()
        self._bound_event.set()
        log.info("smpp bind up", bind=self.name)

    def _down(self) -> None:
        was_bound = self.bound
        self.bound = False
        self._bound_event.clear()
        # Requests that never left: free to go elsewhere. Written ones: the SMSC may have them.
        while not self._broker.queue.empty():
            message = self._broker.queue.get_nowait()
            if isinstance(message, SubmitSm):
                self._resolve(message.log_id, SubmitOutcome.UNAVAILABLE, None, "bind down")
        for log_id, pending in list(self._pending.items()):
            if pending.written:
                self._resolve(log_id, SubmitOutcome.UNKNOWN, None, "bind lost before the response")
            else:
                self._resolve(log_id, SubmitOutcome.UNAVAILABLE, None, "bind down")
        if was_bound:
            self._binds_up.dec()
            if not self._closing:
                metrics.PROVIDER_BIND_FAILURES.labels(self.provider.name, "lost").inc()
            (log.info if self._closing else log.warning)("smpp bind down", bind=self.name)

    def _bind_answered(self, status: SmppCommandStatus) -> None:
        if status != SmppCommandStatus.ESME_ROK:
            self.bind_error = status.name
            metrics.PROVIDER_BIND_FAILURES.labels(self.provider.name, status.name).inc()
            log.error("smpp bind refused", bind=self.name, status=status.name)

    def _written(self, log_id: str) -> None:
        pending = self._pending.get(log_id)
        if pending is not None:
            pending.written = True

    def _not_sent(self, log_id: str, error: str) -> None:
        self._resolve(log_id, SubmitOutcome.TRANSIENT, None, error)

    def _answered(self, log_id: str, status: SmppCommandStatus, message_id: str) -> None:
        self._resolve(log_id, classify(status), status, message_id)

    def _resolve(
        self,
        log_id: str,
        outcome: SubmitOutcome,
        status: SmppCommandStatus | None,
        detail: str | None,
    ) -> None:
        pending = self._pending.pop(log_id, None)
        if pending is None:
            return
        self._window.release()
        if not self._pending:
            self._drained.set()
        if not pending.future.done():
            pending.future.set_result((outcome, status, detail))

    async def _delivered(self, deliver_sm: DeliverSm) -> None:
        tlvs = {p.tag: p.value for p in deliver_sm.optional_params or []}
        text = deliver_sm.short_message or deliver_sm.message_payload or ""
        delivery: Delivery | None
        if deliver_sm.is_receipt():
            delivery = parse_receipt(self.provider.name, tlvs, text)
            if delivery is None:
                metrics.PROVIDER_DELIVERIES.labels(self.provider.name, "unreadable").inc()
                log.warning("smpp receipt without a message id", bind=self.name)
                return
            kind = (
                "intermediate"
                if not delivery.final
                else "delivered"
                if delivery.delivered
                else "undelivered"
            )
        else:
            delivery = Reply(
                self.provider.name, deliver_sm.source.number, deliver_sm.destination.number, text
            )
            kind = "reply"
        metrics.PROVIDER_DELIVERIES.labels(self.provider.name, kind).inc()
        await self.on_deliver(delivery)  # raising: no deliver_sm_resp (see _Esme)

    # Sending.

    async def submit_part(
        self, submit: SubmitSm
    ) -> tuple[SubmitOutcome, SmppCommandStatus | None, str | None]:
        """One submit_sm through the window; its outcome, status and message id (or error)."""
        await self._window.acquire()
        if not self.bound or self._closing:
            self._window.release()
            return SubmitOutcome.UNAVAILABLE, None, "bind down"
        log_id = f"{self.name}:{next(self._ids)}"
        submit.log_id = log_id
        future: asyncio.Future[tuple[SubmitOutcome, SmppCommandStatus | None, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[log_id] = _Pending(future)
        await self._broker.enqueue(submit)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.response_timeout_s)
        except TimeoutError:
            written = self._pending.get(log_id, _Pending(future)).written
            self._resolve(log_id, SubmitOutcome.UNKNOWN, None, "no response")
            if not written:
                return SubmitOutcome.UNAVAILABLE, None, "not sent in time"
            return SubmitOutcome.UNKNOWN, None, f"no response in {self.response_timeout_s:g} s"

    def next_reference(self) -> int:
        return next(self._references)

    @property
    def throttle_delay_s(self) -> float:
        return self._throttle.delay

    async def close(self, drain_timeout_s: float) -> None:
        """Stop taking messages, wait for the window to drain, unbind and stop."""
        self._closing = True
        if self._pending:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout_s)
            except TimeoutError:
                log.warning("smpp window not drained", bind=self.name, outstanding=self.outstanding)
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.esme.stop(), 5.0)
        except TimeoutError:
            log.warning("smpp unbind timed out", bind=self.name)
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._down()


# --- the provider ------------------------------------------------------------------------------

# Metric children by (provider, outcome), made on first use and kept (labels() takes a lock).
_OUTCOMES: dict[tuple[str, SubmitOutcome], Any] = {}
_LATENCY: dict[str, Any] = {}


def record_outcome(provider: str, result: SubmitResult, seconds: float) -> None:
    """mailing_provider_messages_total and _submit_seconds (the kannel kind uses it too)."""
    key = (provider, result.outcome)
    counter = _OUTCOMES.get(key)
    if counter is None:
        counter = _OUTCOMES[key] = metrics.PROVIDER_MESSAGES.labels(provider, result.outcome.value)
    counter.inc()
    histogram = _LATENCY.get(provider)
    if histogram is None:
        histogram = _LATENCY[provider] = metrics.PROVIDER_SUBMIT_SECONDS.labels(provider)
    histogram.observe(seconds)


def _address(number: str, *, source: bool) -> PhoneNumber:
    if number.lstrip("+").isdigit():
        if source and len(number) <= 6:
            return PhoneNumber(number, TON.NETWORK_SPECIFIC, NPI.UNKNOWN)  # a short code
        return PhoneNumber(number.lstrip("+"), TON.INTERNATIONAL, NPI.ISDN)
    return PhoneNumber(number, TON.ALPHANUMERIC, NPI.UNKNOWN)


@dataclass
class SmppClient:
    """All binds of one smpp provider in this replica."""

    provider: SmppProvider
    on_deliver: OnDeliver
    response_timeout_s: float = 30.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    binds: list[SmppBind] = field(default_factory=list)

    def start(self) -> None:
        self.binds = [
            SmppBind(
                self.provider,
                index,
                self.on_deliver,
                response_timeout_s=self.response_timeout_s,
                reconnect_min_s=self.reconnect_min_s,
                reconnect_max_s=self.reconnect_max_s,
            )
            for index in range(self.provider.binds)
        ]
        for bind in self.binds:
            bind.start()

    async def wait_bound(self, timeout_s: float = 10.0) -> bool:
        """True once every bind is up (for tests and start-up logs)."""
        results = await asyncio.gather(*(b.wait_bound(timeout_s) for b in self.binds))
        return all(results)

    @property
    def can_take(self) -> bool:
        """False while no bind is up: the route's next provider takes the messages."""
        return any(b.bound for b in self.binds)

    @property
    def state(self) -> dict[str, Any]:
        """For /providers and logs: no secret in it."""
        return {
            "binds_up": sum(b.bound for b in self.binds),
            "binds": len(self.binds),
            "outstanding": sum(b.outstanding for b in self.binds),
            "bind_error": next((b.bind_error for b in self.binds if b.bind_error), None),
        }

    def _pick(self) -> SmppBind | None:
        up = [b for b in self.binds if b.bound]
        return min(up, key=lambda b: b.outstanding) if up else None

    async def submit(
        self,
        destination: str,
        text: str,
        *,
        valid_until: datetime | None = None,
        parts: SmsParts | None = None,
    ) -> SubmitResult:
        """Send one message (all its parts on one bind) and say what became of it.
        `valid_until` reaches the SMSC as the absolute validity_period: after it, the SMSC
        neither delivers nor keeps trying."""
        started = time.monotonic()
        result = await self._submit(destination, text, valid_until, parts)
        record_outcome(self.provider.name, result, time.monotonic() - started)
        return result

    async def _submit(
        self,
        destination: str,
        text: str,
        valid_until: datetime | None,
        parts: SmsParts | None,
    ) -> SubmitResult:
        sms = parts or split_sms(text)
        bind = self._pick()
        if bind is None:
            return SubmitResult(SubmitOutcome.UNAVAILABLE, parts=sms.count, error="no bind up")
        if valid_until is not None:
            valid_until = valid_until.astimezone(UTC)
            if valid_until <= datetime.now(UTC):
                return SubmitResult(
                    SubmitOutcome.EXPIRED, parts=sms.count, error="past its end time"
                )
        reference = bind.next_reference()
        multipart = sms.count > 1
        source = _address(self.provider.source_addr, source=True)
        target = _address(destination, source=False)

        def submit_sm(body: bytes, part_text: str, first: bool) -> SubmitSm:
            submit = SubmitSm(
                short_message=part_text or " ",  # for aiosmpplib's checks and logs only
                source=source,
                destination=target,
                esm_class=ESM_UDHI if multipart else 0,
                validity_period=valid_until,
                # A receipt for the first part only (as Kannel asks): the message is known by
                # that part's id, one receipt per message (shared/receipts.py).
                registered_delivery=1 if first else 0,
                encoding="ucs2" if sms.encoding == "UCS-2" else None,  # None: data_coding 0
                auto_message_payload=True,  # never used: the part is encoded already
            )
            submit.set_encoded_message(body)
            return submit

        answers = await asyncio.gather(
            *(
                self._submit_part(
                    bind, functools.partial(submit_sm, body, part_text, index == 0), multipart
                )
                for index, (body, part_text) in enumerate(
                    zip(sms.short_messages(reference), sms.texts, strict=True)
                )
            )
        )
        ids = tuple(detail for outcome, _, detail in answers if outcome == SubmitOutcome.ACCEPTED)
        failures = [a for a in answers if a[0] != SubmitOutcome.ACCEPTED]
        if not failures:
            return SubmitResult(SubmitOutcome.ACCEPTED, tuple(i or "" for i in ids), sms.count)
        order = [SubmitOutcome.UNKNOWN, SubmitOutcome.PERMANENT, SubmitOutcome.TRANSIENT]
        order += [SubmitOutcome.THROTTLED, SubmitOutcome.UNAVAILABLE]
        outcome, status, detail = min(failures, key=lambda a: order.index(a[0]))
        if outcome == SubmitOutcome.UNAVAILABLE and ids:
            outcome = SubmitOutcome.UNKNOWN  # some parts went: the phone may have half of it
        return SubmitResult(
            outcome,
            tuple(i or "" for i in ids),
            sms.count,
            error=status.name if status is not None else detail,
            command_status=int(status) if status is not None else None,
            retry_after_s=bind.throttle_delay_s if outcome == SubmitOutcome.THROTTLED else None,
        )

    async def _submit_part(
        self, bind: SmppBind, make: Callable[[], SubmitSm], multipart: bool
    ) -> tuple[SubmitOutcome, SmppCommandStatus | None, str | None]:
        # A throttled part of a long text is retried here (the bind already slows down):
        # sending the whole text again would repeat the parts the SMSC took.
        deadline = time.monotonic() + (self.response_timeout_s if multipart else 0.0)
        while True:
            answer = await bind.submit_part(make())
            if answer[0] != SubmitOutcome.THROTTLED or time.monotonic() >= deadline:
                return answer
            await asyncio.sleep(bind.throttle_delay_s)

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """SIGTERM: no new messages, the windows drain, then every bind unbinds."""
        await asyncio.gather(*(b.close(drain_timeout_s) for b in self.binds))
