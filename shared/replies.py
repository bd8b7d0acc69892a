"""Replies: texts from phones (an SMPP deliver_sm that is not a receipt).

Each reply is kept in `message_reply` with the client it came from (the live client with that
phone) and the mailing it answers (that client's latest mailing with a message to them), so the
console lists replies per mailing. A reply that is exactly a stop word
(`shared.domain.stop_words`: case and surrounding spaces ignored, not a text that merely
contains one) opts that client out at once, as the api does: `opted_out_at` set, undelivered
messages cancelled by the same statement (`shared.domain.opt_out.cancel_undelivered_sql`), and
an audit entry whose actor is `sms:<provider>` (kind `token`, role `viewer`: nobody signed in;
the phone's owner asked), so the audit says it came by SMS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared import metrics
from shared.domain.opt_out import cancel_undelivered_sql
from shared.domain.stop_words import is_stop_reply, stop_word_set


@dataclass(frozen=True)
class Reply:
    provider: str
    phone: str
    text: str


_NOT_DIGITS = re.compile(r"\D")


def _phone(written: str) -> str:
    """The sender's number as the client table writes phones (7 and ten digits) when it is a
    Russian number in any usual form (+7…, 8…); otherwise its digits, or as written."""
    digits = _NOT_DIGITS.sub("", written)
    if len(digits) == 11 and digits[0] in "78":
        return "7" + digits[1:]
    return digits or written


# One statement for the batch: the client by the live-phone index, the mailing by walking
# mailings newest first and probing (mailing_id, client_id), the message table's unique key.
STORE = text("""
    INSERT INTO message_reply (provider, phone, text, client_id, mailing_id, stop)
    SELECT r.provider, r.phone, r.text, c.id,
        (SELECT mg.id FROM mailing mg
         WHERE c.id IS NOT NULL AND EXISTS (
             SELECT 1 FROM message m WHERE m.mailing_id = mg.id AND m.client_id = c.id)
         ORDER BY mg.id DESC LIMIT 1),
        r.stop
    FROM unnest(CAST(:providers AS text[]), CAST(:phones AS text[]), CAST(:texts AS text[]),
                CAST(:stops AS boolean[])) WITH ORDINALITY AS r(provider, phone, text, stop, n)
    LEFT JOIN client c ON c.phone = r.phone AND c.deleted_at IS NULL
    ORDER BY r.n
    RETURNING provider, client_id, stop
""")

OPT_OUT = text("""
    UPDATE client SET opted_out_at = now(), updated_at = now()
    WHERE id = :client_id AND opted_out_at IS NULL AND deleted_at IS NULL
    RETURNING id
""")
CANCEL = text(cancel_undelivered_sql("CAST(:client_id AS bigint)"))
AUDIT = text("""
    INSERT INTO audit_log (actor_name, actor_kind, actor_role, action, target_type, target_id,
                           changes)
    VALUES (:actor, 'token', 'viewer', 'update', 'client', :client_id,
            CAST(:changes AS jsonb))
""")


async def record_replies(
    session: AsyncSession, replies: Sequence[Reply], stop_words: Sequence[str]
) -> int:
    """Stores the replies and opts out the clients whose reply is a stop word; commits.
    Returns how many replies were stored."""
    if not replies:
        return 0
    words = stop_word_set(stop_words)
    stops = [is_stop_reply(r.text, words) for r in replies]
    result = await session.execute(
        STORE,
        {
            "providers": [r.provider for r in replies],
            "phones": [_phone(r.phone) for r in replies],
            "texts": [r.text for r in replies],
            "stops": stops,
        },
    )
    stored = result.all()
    opting: dict[int, str] = {}
    for provider, client_id, stop in stored:
        metrics.REPLIES.labels(provider, "stop" if stop else "text").inc()
        if stop and client_id is not None:
            opting.setdefault(int(client_id), str(provider))
    for client_id, provider in sorted(opting.items()):
        opted = await session.execute(OPT_OUT, {"client_id": client_id})
        if opted.first() is None:
            continue  # opted out already: nothing changes, no audit entry
        cancelled = await session.execute(CANCEL, {"client_id": client_id})
        changes = json.dumps(
            {
                "opted_out": {"old": False, "new": True},
                "messages_cancelled": int(cancelled.rowcount),  # type: ignore[attr-defined]
                "via": "sms",
            }
        )
        await session.execute(
            AUDIT, {"actor": f"sms:{provider}", "client_id": str(client_id), "changes": changes}
        )
    await session.commit()
    return len(stored)
