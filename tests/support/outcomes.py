"""What a message's last error says about whether its request reached the provider."""

from __future__ import annotations

# A request that timed out, or whose connection broke after it was written, may have been
# delivered all the same; a refused connection or an HTTP answer says for sure what happened.
_UNSURE = ("timed out", "ServerDisconnectedError", "ClientPayloadError", "ClientOSError")


def may_have_reached_provider(last_error: str | None) -> bool:
    return last_error is not None and any(marker in last_error for marker in _UNSURE)
