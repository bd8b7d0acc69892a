from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from services.api.clients.schemas import OperatorCode, Tag
from services.api.schemas import InputModel, no_nul
from shared.domain.frequency_cap import normalize_caps
from shared.domain.mailing_times import broken_time_rule
from shared.domain.send_window import SendWindow, parse_send_window
from shared.domain.statuses import MailingStatus, MessageStatus
from shared.domain.text import MAX_TEXT_LENGTH, segment_text
from shared.domain.waiting import WaitReason
from shared.models import Mailing

MAX_FILTER_VALUES = 100


def _no_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be blank")
    return value


# PostgreSQL stores far wider years than Python reads back (1-9999 in the session's zone): keep
# a day's margin either side so every stored moment can be read again.
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError("datetime must be between 0001-01-02 and 9999-12-30 (UTC)")
    return value


Moment = Annotated[AwareDatetime, AfterValidator(_in_range)]

MailingText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TEXT_LENGTH,
        description=f"1 to {MAX_TEXT_LENGTH} characters",
        examples=["Скидка 20% до воскресенья"],
    ),
    AfterValidator(_no_blank),
    AfterValidator(no_nul),
]


def _cap(value: str) -> str:
    canonical = normalize_caps(value)
    if canonical is None:
        raise ValueError("frequency_cap must be N/<period>, e.g. 2/24h or 2/24h,5/7d")
    return canonical


FrequencyCap = Annotated[
    str,
    Field(
        max_length=200,
        description="This mailing's own frequency cap, overriding FREQUENCY_CAP: at most N"
        " messages per client in a rolling window, over every mailing; `N/<period>` with"
        " periods in m, h, d, comma-separated for several. null: FREQUENCY_CAP",
        examples=["2/24h,5/7d"],
    ),
    AfterValidator(_cap),
]
TRANSACTIONAL_DESCRIPTION = (
    "A transactional mailing (a code, a receipt) is neither held to frequency caps nor counted"
    " against them; fixed once the mailing has started"
)


class MailingFilter(InputModel):
    """Which clients receive the mailing. A client matches when it matches both lists;
    an empty list matches any value."""

    operator_codes: list[OperatorCode] = Field(
        default_factory=list, max_length=MAX_FILTER_VALUES, examples=[["912", "916"]]
    )
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_FILTER_VALUES, examples=[["vip"]])


class SendWindowModel(InputModel):
    """Hours of the client's local day when sending is allowed, [start, end); may wrap midnight."""

    start: str = Field(examples=["09:00"], description="HH:MM, 24-hour clock")
    end: str = Field(examples=["21:00"], description="HH:MM, 24-hour clock; may be before start")

    @model_validator(mode="after")
    def _parse(self) -> Self:
        parse_send_window(self.start, self.end)
        return self

    def as_times(self) -> tuple[time, time]:
        window = parse_send_window(self.start, self.end)
        return window.start, window.end

    def window(self) -> SendWindow:
        return parse_send_window(self.start, self.end)


class TimesInOrder(InputModel):
    """A body whose `end_at`, when given with `start_at`, must come after it (the rest of the
    time rules needs the database's clock: `shared.domain.mailing_times`)."""

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        start_at, end_at = getattr(self, "start_at", None), getattr(self, "end_at", None)
        if start_at is not None and end_at is not None:
            rule = broken_time_rule(start_at=start_at, end_at=end_at)
            if rule is not None:
                raise ValueError(rule.value)
        return self


# A create body, the example of the create and of the check.
CREATE_EXAMPLE: JsonDict = {
    "start_at": "2030-03-01T09:00:00+03:00",
    "end_at": "2030-03-02T21:00:00+03:00",
    "text": "Скидка 20% до воскресенья",
    "filter": {"operator_codes": ["912"], "tags": ["vip"]},
    "send_window": {"start": "09:00", "end": "21:00"},
}


class MailingCreate(TimesInOrder):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                CREATE_EXAMPLE,
                {
                    "start_at": "2030-03-01T09:00:00+03:00",
                    "end_at": "2030-03-02T21:00:00+03:00",
                    "text": "Скидка 20% до воскресенья",
                    "frequency_cap": "1/24h,3/7d",
                },
                {
                    "start_at": "2030-03-01T09:00:00+03:00",
                    "end_at": "2030-03-01T10:00:00+03:00",
                    "text": "Заказ 1234 доставлен",
                    "filter": {"tags": ["order-1234"]},
                    "transactional": True,
                },
            ]
        }
    )

    start_at: Moment = Field(description="ISO 8601 with an offset")
    end_at: Moment = Field(description="ISO 8601 with an offset; after start_at, in future")
    text: MailingText
    filter: MailingFilter = Field(default_factory=MailingFilter)
    send_window: SendWindowModel | None = None
    transactional: bool = Field(False, description=TRANSACTIONAL_DESCRIPTION)
    frequency_cap: FrequencyCap | None = None


class MailingPatch(InputModel):
    """Only the fields given change. Once a mailing has started, start_at, filter,
    send_window and transactional are fixed (409); text, end_at and frequency_cap may change
    at any time (a cap set or lowered holds for the messages not yet sent)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"text": "Скидка 25% до воскресенья"}, {"frequency_cap": "1/24h"}]
        }
    )

    start_at: Moment | None = None
    end_at: Moment | None = None
    text: MailingText | None = None
    filter: MailingFilter | None = None
    send_window: SendWindowModel | None = Field(
        None, description="null removes the window (only before the start)"
    )
    transactional: bool | None = Field(None, description=TRANSACTIONAL_DESCRIPTION)
    frequency_cap: FrequencyCap | None = Field(
        None, description="The mailing's own frequency cap; null: back to FREQUENCY_CAP"
    )


class MailingClone(TimesInOrder):
    """When the copy runs; its text, filter and send window are the original's."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"start_at": "2030-04-01T09:00:00+03:00", "end_at": "2030-04-02T21:00:00+03:00"}
            ]
        }
    )

    start_at: Moment = Field(description="ISO 8601 with an offset")
    end_at: Moment = Field(description="ISO 8601 with an offset; after start_at, in future")


class MailingCheckIn(TimesInOrder):
    """The create body; every field but the filter may be left out (its part of the check is
    then left out too: no text, no text figures; no times, no finish estimate)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                CREATE_EXAMPLE,
                {"filter": {"operator_codes": ["912"], "tags": []}},
                {"filter": {"tags": ["vip"]}, "frequency_cap": "2/24h"},
            ]
        }
    )

    start_at: Moment | None = Field(None, description="ISO 8601 with an offset")
    end_at: Moment | None = Field(None, description="ISO 8601 with an offset; after start_at")
    text: MailingText | None = None
    filter: MailingFilter = Field(default_factory=MailingFilter)
    send_window: SendWindowModel | None = None
    transactional: bool = Field(False, description=TRANSACTIONAL_DESCRIPTION)
    frequency_cap: FrequencyCap | None = None


# The old name of the check's body (`POST /mailings/preview`).
MailingPreview = MailingCheckIn


class RecipientsCheck(BaseModel):
    matching: int = Field(description="Live clients the filter matches now", examples=[1250])
    opted_out: int = Field(description="Of those, opted out: they get nothing", examples=[12])
    over_cap: int = Field(
        description="Of those not opted out, at the frequency cap now: their messages would be"
        " cancelled with the reason `frequency cap` (0 with no cap, or a transactional mailing)",
        examples=[0],
    )
    final: int = Field(description="Who would get the mailing now", examples=[1238])


class TextCheck(BaseModel):
    encoding: str = Field(examples=["UCS-2"], description="GSM-7 or UCS-2")
    segments: int = Field(description="SMS segments per message", examples=[1])
    total_segments: int = Field(description="segments x final recipients", examples=[1238])


class RouteCheck(BaseModel):
    provider: str = Field(examples=["default"])
    recipients: int = Field(description="Recipients this provider would get", examples=[1238])
    max_tps: float | None = Field(
        None, description="The provider's rate cap, messages a second (null: none known)"
    )
    finishes_at: datetime | None = Field(
        None,
        description="When its last message would go at max_tps within the send window"
        " (null: no rate cap known, or no times given)",
    )
    can_finish: bool = Field(
        description="Whether it finishes before end_at: a warning, not a refusal", examples=[True]
    )


class ApprovalCheck(BaseModel):
    threshold: int | None = Field(description="APPROVAL_THRESHOLD; null: off", examples=[100000])
    needed: bool = Field(
        description="Over the threshold: the mailing waits in awaiting_approval until another"
        " admin approves it",
        examples=[False],
    )


class CostCheck(BaseModel):
    currency: str = Field(examples=["RUB"], description="The providers' `currency`")
    amount: float = Field(
        examples=[1457.5], description="Segments x price_per_segment, over the priced recipients"
    )
    recipients: int = Field(
        examples=[1238], description="Recipients whose provider has a price in this currency"
    )


class MailingCheck(BaseModel):
    """The pre-send check (docs/GUARDRAILS.md)."""

    recipients: RecipientsCheck
    text: TextCheck | None = Field(description="null when the body has no text")
    routes: list[RouteCheck]
    cost: list[CostCheck] | None = Field(
        None,
        description="Per currency, when the providers file gives a provider's"
        " price_per_segment (null: no price known, or no text)",
    )
    approval: ApprovalCheck


class PreviewOut(MailingCheck):
    """The check, under the old path; `matching_clients` is `recipients.final`."""

    matching_clients: int = Field(
        examples=[1238], description="Deprecated: recipients.final (who would get it now)"
    )


class TextInfo(BaseModel):
    encoding: str = Field(examples=["UCS-2"], description="GSM-7 or UCS-2")
    length: int = Field(description="septets (GSM-7) or UTF-16 code units (UCS-2)")
    segments: int = Field(description="SMS segments the text takes", examples=[1])


class MailingOut(BaseModel):
    id: int
    start_at: datetime
    end_at: datetime
    text: str
    text_info: TextInfo
    filter: MailingFilter
    send_window: SendWindowModel | None
    status: MailingStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    created_by: str | None = Field(
        None, description="Who created it (the token's name or the user's login)"
    )
    approved_by: str | None = Field(None, description="Who approved it, if it needed approval")
    approved_at: datetime | None = None
    transactional: bool = Field(False, description=TRANSACTIONAL_DESCRIPTION)
    frequency_cap: str | None = Field(
        None,
        description="The mailing's own frequency cap (canonical form); null: FREQUENCY_CAP",
        examples=["2/24h,5/7d"],
    )

    @classmethod
    def of(cls, m: Mailing) -> MailingOut:
        seg = segment_text(m.text)
        window = None
        if m.send_window_start is not None and m.send_window_end is not None:
            window = SendWindowModel(
                start=m.send_window_start.strftime("%H:%M"),
                end=m.send_window_end.strftime("%H:%M"),
            )
        return cls(
            id=m.id,
            start_at=m.start_at,
            end_at=m.end_at,
            text=m.text,
            text_info=TextInfo(encoding=seg.encoding, length=seg.units, segments=seg.segments),
            filter=MailingFilter(operator_codes=m.filter_operator_codes, tags=m.filter_tags),
            send_window=window,
            status=MailingStatus(m.status),
            created_at=m.created_at,
            updated_at=m.updated_at,
            started_at=m.started_at,
            completed_at=m.completed_at,
            created_by=m.created_by,
            approved_by=m.approved_by,
            approved_at=m.approved_at,
            transactional=bool(m.transactional),
            frequency_cap=m.frequency_cap,
        )


class MailingChecked(MailingOut):
    """A created or changed mailing with its pre-send check."""

    check: MailingCheck

    @classmethod
    def with_check(cls, m: Mailing, check: MailingCheck) -> MailingChecked:
        return cls(**MailingOut.of(m).__dict__, check=check)


StatusCounts = dict[MessageStatus, int]


class MailingStats(BaseModel):
    mailing_id: int
    status: MailingStatus
    start_at: datetime
    end_at: datetime
    total: int = Field(description="Messages created for the mailing so far")
    counts: StatusCounts = Field(
        description="Messages in each status; every status is present",
        examples=[{s.value: 0 for s in MessageStatus} | {"sent": 10}],
    )


class WaitOut(BaseModel):
    """Why some of the mailing's undelivered messages wait."""

    reason: WaitReason = Field(
        description="scheduled, paused, send_window (closed in the client's local time), "
        "retry (a failed attempt, the next one due later), in_line (due now) or sending"
    )
    messages: int = Field(description="How many messages wait for this reason")
    until: datetime | None = Field(None, description="When the earliest of them stops waiting")
    timezone: str | None = Field(None, description="The client's zone, for a send window")
    detail: str = Field(examples=["send window closed until 09:00 in the client's zone"])


class DeliveryCounts(BaseModel):
    awaiting_receipt: int = Field(description="Accepted by a provider (`sent`), no receipt yet")
    delivered: int = Field(description="The SMSC's receipt says delivered to the phone")
    undelivered: int = Field(description="The SMSC's receipt says not delivered (or refused)")
    delivery_rate: float | None = Field(
        description="delivered / (delivered + undelivered), 0 to 1; null before any receipt",
        examples=[0.9667],
    )


class DeliveryGroup(DeliveryCounts):
    provider: str = Field(description="The provider that took the messages", examples=["gateway"])
    operator_code: str = Field(description="The clients' operator code", examples=["905"])


class DeliveryOut(DeliveryCounts):
    """Receipts of the mailing's messages, in all and per provider and operator code."""

    by_route: list[DeliveryGroup] = Field(
        description="Per provider and operator code, for the messages past sending",
        examples=[
            [
                {
                    "provider": "gateway",
                    "operator_code": "905",
                    "awaiting_receipt": 2,
                    "delivered": 29,
                    "undelivered": 1,
                    "delivery_rate": 0.9667,
                }
            ]
        ],
    )


class ReplyOut(BaseModel):
    """An SMS a recipient sent back (MO) after the mailing's message."""

    id: int
    received_at: datetime
    provider: str = Field(examples=["aggregator"])
    client_id: int | None = Field(description="The live client with that phone, if any")
    phone: str = Field(examples=["79001234567"])
    text: str = Field(examples=["STOP"])
    stop: bool = Field(description="An exact stop word: the client was opted out")


class MailingStatsDetail(MailingStats):
    delivery: DeliveryOut = Field(description="Receipts: delivered, undelivered, awaiting")
    created_at: datetime
    started_at: datetime | None
    fanout_done_at: datetime | None
    completed_at: datetime | None
    waiting: list[WaitOut] = Field(
        default_factory=list,
        description="Why undelivered messages wait; empty when none does",
        examples=[
            [
                {
                    "reason": "send_window",
                    "messages": 1,
                    "until": "2026-12-02T06:00:00Z",
                    "timezone": "Europe/Moscow",
                    "detail": "send window closed until 09:00 in the client's zone (Europe/Moscow)",
                }
            ]
        ],
    )


class StatsPage(BaseModel):
    items: list[MailingStats]
    next_after_id: int | None
    totals: StatusCounts = Field(description="Messages in each status over all live mailings")
    mailings_by_status: dict[MailingStatus, int]


class MessageOut(BaseModel):
    id: int
    client_id: int
    status: MessageStatus
    attempts: int
    last_error: str | None
    not_before: datetime
    created_at: datetime
    queued_at: datetime | None
    sent_at: datetime | None
    updated_at: datetime
    provider: str | None = Field(
        None, description="The provider that took it (PROVIDERS_FILE's name)", examples=["stub"]
    )
    provider_message_id: str | None = Field(
        None, description="That provider's id for it (its receipts name it)", examples=["4711"]
    )
