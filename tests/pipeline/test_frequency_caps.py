"""Frequency caps end to end: mailings to the same clients racing through two schedulers and
two senders under FREQUENCY_CAP; no client gets more than the cap, the rest are cancelled with
the reason, a transactional mailing goes to everyone and counts for nothing."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.pipeline.conftest import Pipeline
from tests.support.rig import data

pytestmark = pytest.mark.pipeline

CLIENTS = 400
CAP = "2/24h"


async def test_racing_mailings_keep_every_client_under_the_cap(pipeline: Pipeline) -> None:
    pipeline.seed_clients(CLIENTS)
    # All due at once, created before the services start: their fan-outs and sends interleave.
    mailings = [await pipeline.create_mailing(text=f"offer {n}") for n in range(3)]
    receipt_body = data.mailing_body(text="receipt") | {"transactional": True}
    receipt = (await pipeline.api.post("/mailings", json=receipt_body)).json()
    for _ in range(2):
        pipeline.start_scheduler(frequency_cap=CAP, fanout_chunk_size=50)
        pipeline.start_sender(frequency_cap=CAP)
    for proc in pipeline.processes.started:
        await proc.wait_ready()

    totals: Counter[str] = Counter()
    for mailing in mailings:
        counts = await pipeline.wait_terminal(mailing["id"], CLIENTS, timeout=120)
        assert set(counts) <= {"sent", "cancelled"}, counts
        totals.update(counts)
        await pipeline.assert_stats_agree(mailing["id"])
    assert await pipeline.wait_terminal(receipt["id"], CLIENTS, timeout=120) == {"sent": CLIENTS}

    # Each client got exactly two of the three offers (and its receipt): the third is
    # cancelled, with the reason, and was never sent.
    assert totals == {"sent": 2 * CLIENTS, "cancelled": CLIENTS}
    per_phone = Counter(d["phone"] for d in pipeline.deliveries().values())
    assert set(per_phone.values()) == {3}  # two offers and the receipt
    with pipeline.db() as conn:
        reasons = conn.execute(
            "SELECT DISTINCT last_error FROM message WHERE status = 'cancelled'"
        ).fetchall()
        per_client = conn.execute(
            "SELECT count(*) FROM message m JOIN mailing mg ON mg.id = m.mailing_id"
            " WHERE m.status = 'sent' AND NOT mg.transactional GROUP BY m.client_id"
        ).fetchall()
    assert reasons == [("frequency cap",)]
    assert {n for (n,) in per_client} == {2}
