"""The invariants a mailing holds to after any fault, checked from the stub's record and the
database (the chaos scenarios and the soak end with them):

- every message of the mailing reached a terminal status;
- exactly one message per matching client (nothing left out, nothing created twice);
- every message marked `sent` was accepted by the provider, to its client's phone;
- nothing accepted by the provider after the mailing's end time;
- duplicates (a message accepted more than once) counted, and within the caller's bound apart
  from those after a request timeout (the provider may have taken the first one);
- the per-status counters agree with a `GROUP BY` over the messages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from tests.support.outcomes import may_have_reached_provider
from tests.support.rig.data import TERMINAL, counter_counts, mailing_row, message_counts

LEFT_OUT = """
SELECT count(*) FROM client c JOIN mailing mg ON mg.id = %s
WHERE c.id <= mg.fanout_max_client_id AND c.deleted_at IS NULL
  AND (cardinality(mg.filter_tags) = 0 OR c.tag = ANY(mg.filter_tags))
  AND (cardinality(mg.filter_operator_codes) = 0
       OR c.operator_code = ANY(mg.filter_operator_codes))
  AND NOT EXISTS (SELECT 1 FROM message m WHERE m.mailing_id = mg.id AND m.client_id = c.id)
"""

MESSAGES = """
SELECT m.id, m.client_id, c.phone, m.status, coalesce(m.last_error, '')
FROM message m JOIN client c ON c.id = m.client_id
WHERE m.mailing_id = %s
"""


@dataclass(frozen=True)
class Verdict:
    """What `verify_mailing` found (it has asserted the invariants by then)."""

    messages: int
    counts: dict[str, int]
    delivered: int
    duplicates: int
    duplicates_after_timeout: int
    duplicate_bound: int
    after_end: int

    def figures(self) -> dict[str, Any]:
        return asdict(self)


def verify_mailing(
    conn: psycopg.Connection[Any],
    mailing_id: int,
    delivered: dict[int, dict[str, Any]],
    *,
    matching: int,
    max_duplicates: int = 0,
    unsure_ok: bool = False,
    exclusive: bool = True,
) -> Verdict:
    """Assert the invariants of one mailing; `delivered` is the stub's record (by id).

    `unsure_ok`: a request cut off by the end time may have reached the provider anyway,
    so a delivered message may be recorded `expired` only when its last error was a timeout.
    `exclusive=False`: other mailings share the stub; only this one's deliveries count.
    """
    counts = message_counts(conn, mailing_id)
    total = sum(counts.values())
    end_at = mailing_row(conn, mailing_id)["end_at"].timestamp()
    assert set(counts) <= TERMINAL, f"mailing {mailing_id}: messages left open: {counts}"
    assert total == matching, f"mailing {mailing_id}: {total} messages for {matching} clients"
    rows = conn.execute(MESSAGES, [mailing_id]).fetchall()
    left_out = conn.execute(LEFT_OUT, [mailing_id]).fetchone()
    assert left_out is not None and left_out[0] == 0, f"{left_out} matching clients left out"
    clients = [r[1] for r in rows]
    assert len(set(clients)) == len(clients), "a client got two messages"
    assert counter_counts(conn, mailing_id) == counts, "status counters disagree"

    by_id = {r[0]: r for r in rows}
    if not exclusive:
        delivered = {i: d for i, d in delivered.items() if i in by_id}
    strangers = delivered.keys() - by_id.keys()
    assert not strangers, f"the provider got ids that are not this mailing's: {strangers}"
    wrong_phone = [i for i, d in delivered.items() if str(d["phone"]) != by_id[i][2]]
    assert not wrong_phone, f"delivered to the wrong phone: {wrong_phone[:10]}"
    sent = {r[0] for r in rows if r[3] == "sent"}
    missing = sent - delivered.keys()
    assert not missing, f"{len(missing)} messages marked sent but never accepted"
    unrecorded = delivered.keys() - sent
    if unsure_ok:
        unsure = {r[0] for r in rows if r[3] == "expired" and may_have_reached_provider(r[4])}
        assert unrecorded <= unsure, f"delivered but not sent: {sorted(unrecorded)[:10]}"
    else:
        assert not unrecorded, f"delivered but not marked sent: {sorted(unrecorded)[:10]}"
    late = {i: d["last_at"] - end_at for i, d in delivered.items() if d["last_at"] > end_at}
    after_end = len(late)
    assert after_end == 0, (
        f"{after_end} deliveries after the end time, up to {max(late.values()):.2f} s after it; "
        f"{sum(1 for i in late if may_have_reached_provider(by_id[i][4]))} of them timed out "
        f"at the sender; statuses {sorted({by_id[i][3] for i in late})}"
    )
    duplicates = sum(d["count"] - 1 for d in delivered.values())
    # A request that timed out may have reached the provider all the same: sending it again
    # is the at-least-once no system avoids. Every other duplicate counts against the bound.
    timed_out = {r[0] for r in rows if may_have_reached_provider(r[4])}
    unexplained = sum(d["count"] - 1 for i, d in delivered.items() if i not in timed_out)
    assert unexplained <= max_duplicates, (
        f"{unexplained} duplicates > {max_duplicates} (and {duplicates - unexplained} "
        "after a request timeout)"
    )
    return Verdict(
        messages=total,
        counts=counts,
        delivered=len(delivered),
        duplicates=duplicates,
        duplicates_after_timeout=duplicates - unexplained,
        duplicate_bound=max_duplicates,
        after_end=after_end,
    )


def error_lines(logs: dict[str, str]) -> list[str]:
    """Unexpected error lines (not alerts) and tracebacks across service logs (name -> text)."""
    found = []
    for name, text in logs.items():
        for line in text.splitlines():
            if ('"level": "error"' in line and "ALERT" not in line) or "Traceback" in line:
                found.append(f"{name}: {line[:400]}")
    return found
