"""`python -m tests.chaos.stalling_sender`: the real sender, whose event loop stalls once at
the worst moment for the end-time rule (tests/chaos/test_end_time.py).

The first request handed to the provider client with less than `STALL_WITHIN_S` left before
its mailing's end (so it has just passed the sender's end-time check) blocks the loop until
`STALL_TO_S_BEFORE_END` before the end: inside END_SAFETY_MARGIN_S, where no request may
start, but before the end, so the request's own timeout (capped at the end) has not fired yet.
The block runs at the last moment before the write: inside libcurl's PREREQFUNCTION callback,
just ahead of the client's own check there, which is what a CPU-starved process, a long garbage
collection or a throttled container does at random between the check and the write. (It used
to be a callback queued just before the request; under uvloop curl's first action, a 0 ms
timer, could run ahead of it and write the request before the stall, so the test failed now
and then though no rule was broken.) The stall is logged ("stalled the event loop", with the
message id and the seconds) for the test to see.

With `STALL_PAST_LEASE=1` it stalls instead the first request of a mailing far from its end
until 0.3 s past the request's `start_by`, which is then the lease's last start (the claim +
SENDING_LEASE_S - PROVIDER_TIMEOUT_S - the result slack): a request written then could end,
or have its result written, after the lease, when the reaper may have given the message to
another sender.
"""

from __future__ import annotations

import os
import time
from typing import Any

import structlog
import uvloop

from services.sender import __main__ as sender_main
from services.sender import curl
from services.sender.provider import ProviderClient, SendResult

STALL_WITHIN_S = float(os.environ.get("STALL_WITHIN_S", "1.0"))
STALL_TO_S_BEFORE_END = float(os.environ.get("STALL_TO_S_BEFORE_END", "0.1"))
STALL_PAST_LEASE = os.environ.get("STALL_PAST_LEASE") == "1"

log = structlog.get_logger("sender")
_send = ProviderClient.send
_stalled = False


async def _stalling_send(
    self: ProviderClient,
    message_id: int,
    phone: str,
    text: str,
    time_left_s: float,
    **kwargs: Any,
) -> SendResult:
    global _stalled, _stall_next
    stall_s = None
    if _stalled:
        pass
    elif STALL_PAST_LEASE:
        if time_left_s > 60:
            stall_s = kwargs["start_by"] - time.monotonic() + 0.3
    elif STALL_TO_S_BEFORE_END < time_left_s < STALL_WITHIN_S:
        stall_s = time_left_s - STALL_TO_S_BEFORE_END
    if stall_s is not None:
        _stalled = True
        log.warning(
            "stalled the event loop",
            message_id=message_id,
            time_left_s=time_left_s,
            stall_s=stall_s,
        )
        # Taken by this request's PREREQFUNCTION (`_stalling_before`), created within the call
        # below before it first awaits.
        _stall_next = stall_s
    return await _send(self, message_id, phone, text, time_left_s, **kwargs)


_real_before = curl._before
_stall_next: float | None = None


def _stalling_before(deadline: float) -> Any:
    """The client's write-time check, blocked first (once) by the stall pending for it."""
    global _stall_next
    check = _real_before(deadline)
    stall_s, _stall_next = _stall_next, None
    if stall_s is None:
        return check

    def stalled(*args: object) -> int:
        time.sleep(stall_s)  # the whole loop is this late when curl writes the request
        return int(check(*args))

    return stalled


ProviderClient.send = _stalling_send  # type: ignore[method-assign]
curl._before = _stalling_before

if __name__ == "__main__":
    uvloop.run(sender_main.main())
