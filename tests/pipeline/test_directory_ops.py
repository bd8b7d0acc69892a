"""Opt-out and retry-failed through the real scheduler, sender and provider stub."""

from __future__ import annotations

import pytest

from tests.pipeline.conftest import Pipeline
from tests.support import database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline


def _rows(pipeline: Pipeline, query: str, *params: object) -> list[tuple]:
    with database.connect(pipeline.db_name) as conn:
        return conn.execute(query, list(params)).fetchall()


async def test_opt_out_during_a_running_mailing_stops_that_clients_message(
    pipeline: Pipeline,
) -> None:
    """Clients opted out before the start get no message at all (fan-out); clients opted out
    while it runs get nothing more: through the API their undelivered messages are cancelled
    at once, and set behind the API's back the sender's claim cancels them ("opted out")."""
    pipeline.seed_clients(300)
    _rows(pipeline, "UPDATE client SET opted_out_at = now() WHERE id <= 20 RETURNING id")
    await pipeline.start(RATE_LIMIT_PER_S="40")
    mailing = await pipeline.create_mailing()
    mailing_id = mailing["id"]

    async def some_sent() -> bool:
        return pipeline.message_counts(mailing_id).get("sent", 0) >= 20

    await wait_until(some_sent, timeout=60, message="first sends")
    # The clients whose messages are still waiting, the last 100 by id: half opt out through
    # the API, half directly in the database (only the sender's claim can catch those).
    waiting = [
        r[0]
        for r in _rows(
            pipeline,
            "SELECT client_id FROM message WHERE mailing_id = %s AND status IN"
            " ('pending', 'queued', 'retrying') ORDER BY client_id DESC LIMIT 100",
            mailing_id,
        )
    ]
    assert len(waiting) == 100, "the mailing went too fast to catch it running"
    through_api, behind = waiting[:50], waiting[50:]
    for client_id in through_api:
        response = await pipeline.api.patch(f"/clients/{client_id}", json={"opted_out": True})
        assert response.status_code == 200, response.text
    _rows(
        pipeline,
        "UPDATE client SET opted_out_at = now() WHERE id = ANY(%s) RETURNING id",
        behind,
    )
    # What may still go out: requests under way at the opt-out (a lease still live).
    under_way = {
        r[0]
        for r in _rows(
            pipeline,
            "SELECT client_id FROM message WHERE mailing_id = %s AND client_id = ANY(%s)"
            " AND status IN ('sending', 'sent')",
            mailing_id,
            waiting,
        )
    }

    counts = await pipeline.wait_terminal(mailing_id, 280, timeout=120)
    assert _rows(
        pipeline,
        "SELECT count(*) FROM message WHERE mailing_id = %s AND client_id <= 20",
        mailing_id,
    ) == [(0,)], "the fan-out skips clients opted out before the start"
    outcome = dict(
        _rows(
            pipeline,
            "SELECT client_id, status || ':' || coalesce(last_error, '') FROM message"
            " WHERE mailing_id = %s AND client_id = ANY(%s)",
            mailing_id,
            waiting,
        )
    )
    for client_id in waiting:
        if client_id not in under_way:
            assert outcome[client_id] == "cancelled:opted out", (client_id, outcome[client_id])
    # The ones behind the API's back reached a claim: at least some were cancelled there.
    assert sum(outcome[c] == "cancelled:opted out" for c in behind if c not in under_way) > 0
    phones_out = {
        r[0] for r in _rows(pipeline, "SELECT phone FROM client WHERE id = ANY(%s)", waiting)
    }
    delivered = {str(d["phone"]) for d in pipeline.deliveries().values()}
    assert len(delivered & phones_out) <= len(under_way)
    assert counts.get("sent", 0) == 280 - 100 + sum(outcome[c].startswith("sent") for c in waiting)
    await pipeline.assert_stats_agree(mailing_id)


async def test_retry_failed_after_the_provider_refused_messages(pipeline: Pipeline) -> None:
    pipeline.seed_clients(40)
    pipeline.set_faults(status_override=400)
    await pipeline.start()
    mailing = await pipeline.create_mailing()
    assert await pipeline.wait_terminal(mailing["id"], 40) == {"failed": 40}
    await pipeline.wait_completed(mailing["id"])

    pipeline.set_faults(status_override=None)
    response = await pipeline.api.post(f"/mailings/{mailing['id']}/retry-failed")
    assert response.status_code == 200, response.text
    assert response.json() == {"mailing_id": mailing["id"], "retried": 40, "status": "running"}

    assert await pipeline.wait_terminal(mailing["id"], 40) == {"sent": 40}
    await pipeline.wait_completed(mailing["id"])
    assert len(pipeline.deliveries()) == 40
    assert _rows(
        pipeline, "SELECT DISTINCT attempts FROM message WHERE mailing_id = %s", mailing["id"]
    ) == [(1,)], "attempts started over"
    await pipeline.assert_stats_agree(mailing["id"])
