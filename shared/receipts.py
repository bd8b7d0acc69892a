"""Delivery receipts: a provider says whether a `sent` message reached the phone.

Receipts come from SMPP binds (the sender) and Kannel's dlr-url (the api), at the rate of sends,
on any replica, possibly before the sender's write of the provider's id has committed, twice,
hours later, or for ids we never sent. So:

- `apply_receipts` takes a batch in one statement: every `sent` message whose
  (provider, provider_message_id) a receipt names becomes `delivered` or `undelivered`
  (`Mover.RECEIPT`, only from `sent`: a message counts its receipt once); a receipt whose
  message is not known (yet) goes to `message_receipt_pending` (ON CONFLICT DO NOTHING: a second
  early copy is a duplicate); one whose message is known but no longer `sent` is a duplicate.
- `match_pending` (periodic) applies the pending receipts whose message is known by now, and
  drops, as `unknown`, those older than the hold. The table is durable: a sender restart loses
  none, and an SMPP receipt is acknowledged only after it is stored.

A long SMPP text is several submit_sm, each with its own SMSC id. The message records its FIRST
part's id, and the sender asks for a receipt on that part only (`registered_delivery` 1 on the
first part, 0 on the others), as Kannel does: one receipt per message. An SMSC that sends
receipts for the other parts anyway sends ids no message has: they wait in the pending table
and are dropped as `unknown` after the hold (docs/PROVIDERS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import metrics
from shared.domain.lifecycle import S, sql

# A receipt's error (e.g. "UNDELIV err:011") goes to last_error; nothing when it has none.
_UNDELIVERED_ERROR = "undelivered"


@dataclass(frozen=True)
class Receipt:
    provider: str
    provider_message_id: str
    delivered: bool
    error: str | None = None


@dataclass(frozen=True)
class ReceiptCounts:
    matched: int = 0  # a sent message moved to delivered / undelivered
    early: int = 0  # no message known by that id yet: kept in message_receipt_pending
    duplicate: int = 0  # the message had its receipt already (or the early one was kept)


def _settle(receipt: str) -> str:
    """The SET list that applies the receipt row `receipt` to message `m`."""
    return f"""
        status = CASE WHEN {receipt}.delivered THEN {sql(S.DELIVERED)}
                      ELSE {sql(S.UNDELIVERED)} END,
        last_error = CASE WHEN {receipt}.delivered THEN m.last_error
                          ELSE coalesce({receipt}.error, '{_UNDELIVERED_ERROR}') END,
        updated_at = now()
    """


_KNOWN = "m.provider = {r}.provider AND m.provider_message_id = {r}.provider_message_id"

# One statement per batch. `known` reads the snapshot before the update: a message that
# exists by that id (whatever its status) keeps its receipt out of the pending table.
APPLY = text(f"""
    WITH r AS (
        SELECT DISTINCT ON (provider, provider_message_id) *
        FROM unnest(CAST(:providers AS text[]), CAST(:ids AS text[]),
                    CAST(:delivered AS boolean[]), CAST(:errors AS text[]))
            AS r(provider, provider_message_id, delivered, error)
    ),
    matched AS (
        UPDATE message m SET {_settle("r")}
        FROM r WHERE {_KNOWN.format(r="r")} AND m.status = {sql(S.SENT)}
        RETURNING r.provider
    ),
    early AS (
        INSERT INTO message_receipt_pending (provider, provider_message_id, delivered, error)
        SELECT r.provider, r.provider_message_id, r.delivered, r.error FROM r
        WHERE NOT EXISTS (SELECT 1 FROM message m WHERE {_KNOWN.format(r="r")})
        ON CONFLICT DO NOTHING
        RETURNING provider
    ),
    outcome AS (
        SELECT provider, 'matched' AS outcome FROM matched
        UNION ALL SELECT provider, 'early' FROM early
    )
    SELECT provider, outcome, count(*) FROM outcome GROUP BY provider, outcome
""")

# The pending receipts, a bounded batch, locked so replicas running this at once share them.
MATCH_PENDING = text(f"""
    WITH p AS (
        SELECT * FROM message_receipt_pending
        ORDER BY received_at LIMIT :limit FOR UPDATE SKIP LOCKED
    ),
    matched AS (
        UPDATE message m SET {_settle("p")}
        FROM p WHERE {_KNOWN.format(r="p")} AND m.status = {sql(S.SENT)}
        RETURNING p.provider, p.provider_message_id
    ),
    gone AS (
        DELETE FROM message_receipt_pending d USING p
        WHERE d.provider = p.provider AND d.provider_message_id = p.provider_message_id
          AND (EXISTS (SELECT 1 FROM message m WHERE {_KNOWN.format(r="p")})
               OR p.received_at < now() - make_interval(secs => :hold_s))
        RETURNING d.provider, d.provider_message_id,
            EXISTS (SELECT 1 FROM message m WHERE {_KNOWN.format(r="p")}) AS known
    ),
    outcome AS (
        SELECT provider, 'matched' AS outcome FROM matched
        UNION ALL SELECT g.provider, 'duplicate' FROM gone g WHERE g.known AND NOT EXISTS (
            SELECT 1 FROM matched x
            WHERE x.provider = g.provider AND x.provider_message_id = g.provider_message_id)
        UNION ALL SELECT provider, 'unknown' FROM gone WHERE NOT known
    )
    SELECT provider, outcome, count(*) FROM outcome GROUP BY provider, outcome
""")


def _count(rows: Sequence[tuple[str, str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for provider, outcome, n in rows:
        totals[outcome] = totals.get(outcome, 0) + int(n)
        if n:
            metrics.RECEIPTS.labels(provider, outcome).inc(int(n))
    return totals


async def apply_receipts(session: AsyncSession, receipts: Sequence[Receipt]) -> ReceiptCounts:
    """Stores a batch of receipts and commits (see the module's docstring)."""
    if not receipts:
        return ReceiptCounts()
    result = await session.execute(
        APPLY,
        {
            "providers": [r.provider for r in receipts],
            "ids": [r.provider_message_id for r in receipts],
            "delivered": [r.delivered for r in receipts],
            "errors": [r.error for r in receipts],
        },
    )
    rows = [(str(p), str(o), int(n)) for p, o, n in result.all()]
    await session.commit()
    by_outcome = _count(rows)
    matched, early = by_outcome.get("matched", 0), by_outcome.get("early", 0)
    duplicate = len(receipts) - matched - early
    # Duplicates by provider for the metric: what neither matched nor waits (a second copy in
    # the same batch too).
    if duplicate:
        per_provider: dict[str, int] = {}
        for r in receipts:
            per_provider[r.provider] = per_provider.get(r.provider, 0) + 1
        for provider, _outcome, n in rows:
            per_provider[provider] -= n
        for provider, n in per_provider.items():
            if n > 0:
                metrics.RECEIPTS.labels(provider, "duplicate").inc(n)
    return ReceiptCounts(matched=matched, early=early, duplicate=duplicate)


async def match_pending(
    session: AsyncSession, *, hold_s: float, limit: int = 5000
) -> tuple[int, int]:
    """Applies the pending receipts whose message is known now and drops those older than
    `hold_s` whose message is still unknown; commits. Returns (matched, dropped as unknown)."""
    result = await session.execute(MATCH_PENDING, {"hold_s": hold_s, "limit": limit})
    rows = [(str(p), str(o), int(n)) for p, o, n in result.all()]
    await session.commit()
    by_outcome = _count(rows)
    return by_outcome.get("matched", 0), by_outcome.get("unknown", 0)
