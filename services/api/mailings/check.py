"""The pre-send check: who a mailing would reach, what its text costs in segments, whether
each route can finish before the end time, and whether it needs approval (docs/GUARDRAILS.md).

`POST /mailings/check` (and its old name `/mailings/preview`) answers it for a body; create
and edit answer it under `check`; the console's forms show it as the fields change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Boolean, TextClause, func, literal_column, not_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.mailings.schemas import (
    ApprovalCheck,
    CostCheck,
    MailingCheck,
    MailingFilter,
    RecipientsCheck,
    RouteCheck,
    TextCheck,
)
from shared.domain.filters import RecipientsSql
from shared.domain.frequency_cap import (
    cap_rules_sql,
    clients_at_cap_sql,
    effective_caps,
    format_caps,
    reservations_sql,
)
from shared.domain.send_estimate import can_finish, finishes_at
from shared.domain.send_window import SendWindow
from shared.domain.text import segment_text
from shared.models import Client, Mailing
from shared.providers import FALLBACK_SOURCE, ProvidersConfig

# The routes the check reads: the api's providers file as of this request (set for every
# request by `ProvidersContext`); unset (a service call outside a request, as in some tests),
# the one `default` route.
CURRENT_PROVIDERS: ContextVar[ProvidersConfig | None] = ContextVar("check_providers", default=None)
NO_ROUTE = "(no route)"


class ProvidersContext:
    """ASGI middleware: the api's current providers file for the requests' checks."""

    def __init__(self, app: ASGIApp, current: Callable[[], ProvidersConfig]) -> None:
        self.app = app
        self.current = current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = CURRENT_PROVIDERS.set(self.current())
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_PROVIDERS.reset(token)


@dataclass(frozen=True, slots=True)
class Route:
    """Where messages go. One provider today, `default`, with no rate cap known (the providers
    file, when it comes, lists several, each with its `max_tps`)."""

    provider: str
    max_tps: float | None = None


DEFAULT_ROUTES = (Route("default"),)


@dataclass(frozen=True, slots=True)
class Draft:
    """What the check reads of a mailing, saved or not."""

    filter: MailingFilter
    text: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    window: SendWindow | None = None
    transactional: bool = False
    frequency_cap: str | None = None  # its own cap; None: FREQUENCY_CAP

    @classmethod
    def of(cls, mailing: Mailing) -> Draft:
        window = None
        if mailing.send_window_start is not None and mailing.send_window_end is not None:
            window = SendWindow(mailing.send_window_start, mailing.send_window_end)
        return cls(
            filter=MailingFilter(
                operator_codes=mailing.filter_operator_codes, tags=mailing.filter_tags
            ),
            text=mailing.text,
            start_at=mailing.start_at,
            end_at=mailing.end_at,
            window=window,
            transactional=bool(mailing.transactional),
            frequency_cap=mailing.frequency_cap,
        )


def recipients_sql(mailing_filter: MailingFilter) -> tuple[RecipientsSql, dict[str, list[str]]]:
    """The fan-out's recipients rule over the `client` table, and its parameters."""
    codes, tags = list(mailing_filter.operator_codes), list(mailing_filter.tags)
    recipients = RecipientsSql(
        "client",
        codes="CAST(:codes AS text[])" if codes else None,
        tags="CAST(:tags AS text[])" if tags else None,
    )
    return recipients, {name: value for name, value in (("codes", codes), ("tags", tags)) if value}


def where(conditions: list[str], params: dict[str, list[str]]) -> TextClause:
    """SQL conditions ANDed together, with their parameters bound."""
    return text(" AND ".join(conditions)).bindparams(**params)


def needs_approval(recipients: int, threshold: int | None) -> bool:
    """A mailing over APPROVAL_THRESHOLD recipients waits for an admin's approval."""
    return threshold is not None and recipients > threshold


async def count_recipients(
    session: AsyncSession, mailing_filter: MailingFilter, caps: str = ""
) -> RecipientsCheck:
    """Live clients the filter matches, and how many of them get nothing and why: opted out,
    or (not opted out and) at the frequency cap `caps` (canonical form; empty: none)."""
    recipients, params = recipients_sql(mailing_filter)
    opted_out = literal_column(recipients.opted_out(), Boolean)
    # One hashed set of the clients at the cap (`client_contact` and the counted mailings'
    # unsent messages, grouped), not a probe per client and rule.
    at_cap_ids = clients_at_cap_sql(cap_rules_sql("CAST(:caps AS text)"), reservations_sql())
    at_cap = text(f"client.id IN ({at_cap_ids})").bindparams(caps=caps)
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(opted_out),
                func.count().filter(not_(opted_out), at_cap) if caps else literal_column("0"),
            )
            .select_from(Client)
            .where(where(recipients.matching(), params))
        )
    ).one()
    matching, opted, over_cap = int(row[0]), int(row[1]), int(row[2])
    return RecipientsCheck(
        matching=matching, opted_out=opted, over_cap=over_cap, final=matching - opted - over_cap
    )


async def recipients_by_operator(
    session: AsyncSession, mailing_filter: MailingFilter, caps: str = ""
) -> dict[str, int]:
    """The final recipients (live, matching, not opted out, not at the cap) per operator code:
    what each route would carry. One grouped count over the same rule as `count_recipients`."""
    recipients, params = recipients_sql(mailing_filter)
    opted_out = literal_column(recipients.opted_out(), Boolean)
    query = (
        select(Client.operator_code, func.count())
        .select_from(Client)
        .where(where(recipients.matching(), params), not_(opted_out))
        .group_by(Client.operator_code)
    )
    if caps:
        at_cap_ids = clients_at_cap_sql(cap_rules_sql("CAST(:caps AS text)"), reservations_sql())
        query = query.where(not_(text(f"client.id IN ({at_cap_ids})").bindparams(caps=caps)))
    return {code: int(n) for code, n in (await session.execute(query)).all()}


def routed(config: ProvidersConfig, by_operator: dict[str, int]) -> dict[str, int]:
    """Recipients per provider: each operator code's route, its first provider (a `best` route's
    share moves with its measured delivery; the estimate takes the first); unrouted codes
    under NO_ROUTE (their messages would wait)."""
    per_provider: Counter[str] = Counter()
    for code, n in by_operator.items():
        route = config.route_of(code)
        per_provider[route.via[0] if route is not None else NO_ROUTE] += n
    return dict(per_provider)


def costs(
    config: ProvidersConfig, per_provider: dict[str, int], segments: int
) -> list[CostCheck] | None:
    """Per currency: the segments of the recipients whose provider has a price, times it.
    None when no provider on the way has one."""
    totals: dict[str, list[float]] = {}
    for name, n in per_provider.items():
        provider = config.providers.get(name)
        if provider is None or provider.price_per_segment is None:
            continue
        total = totals.setdefault(provider.currency, [0.0, 0])
        total[0] += n * segments * provider.price_per_segment
        total[1] += n
    if not totals:
        return None
    return [
        CostCheck(currency=currency, amount=round(amount, 2), recipients=int(recipients))
        for currency, (amount, recipients) in sorted(totals.items())
    ]


async def presend_check(
    session: AsyncSession,
    draft: Draft,
    *,
    threshold: int | None,
    frequency_cap: str | None = None,
    routes: tuple[Route, ...] = DEFAULT_ROUTES,
    now: datetime | None = None,
) -> MailingCheck:
    """`frequency_cap`: FREQUENCY_CAP, for a draft without a cap of its own."""
    caps = effective_caps(draft.frequency_cap, frequency_cap, transactional=draft.transactional)
    recipients = await count_recipients(session, draft.filter, format_caps(caps))
    text = None
    if draft.text is not None:
        seg = segment_text(draft.text)
        text = TextCheck(
            encoding=seg.encoding,
            segments=seg.segments,
            total_segments=seg.segments * recipients.final,
        )
    now = now or datetime.now(UTC)
    start = max(draft.start_at, now) if draft.start_at is not None else now
    config = CURRENT_PROVIDERS.get()
    if config is None:
        shares = [(route.provider, route.max_tps, recipients.final) for route in routes]
        cost = None
    else:
        if config.source == FALLBACK_SOURCE:  # no file: `default` takes every code
            per_provider = {next(iter(config.providers)): recipients.final}
        else:
            by_operator = await recipients_by_operator(session, draft.filter, format_caps(caps))
            per_provider = routed(config, by_operator)
        shares = [
            (
                name,
                config.providers[name].max_tps if name in config.providers else None,
                n,
            )
            for name, n in sorted(per_provider.items())
        ]
        cost = costs(config, per_provider, text.segments) if text is not None else None
    answers = []
    for provider, max_tps, share in shares:
        finish = finishes_at(recipients=share, max_tps=max_tps, start_at=start, window=draft.window)
        answers.append(
            RouteCheck(
                provider=provider,
                recipients=share,
                max_tps=max_tps,
                finishes_at=finish,
                can_finish=provider != NO_ROUTE
                and (
                    can_finish(finish, draft.end_at, rate_known=max_tps is not None)
                    if draft.end_at is not None
                    else True
                ),
            )
        )
    return MailingCheck(
        recipients=recipients,
        text=text,
        routes=answers,
        cost=cost,
        approval=ApprovalCheck(
            threshold=threshold, needed=needs_approval(recipients.final, threshold)
        ),
    )
