"""What a message's last error says about whether its request reached the provider."""

from __future__ import annotations

from services.sender.curl import MAY_HAVE_ARRIVED

# A request that timed out, or whose connection broke after it was written, may have been
# delivered all the same; a refused connection or an HTTP answer says for sure what happened.
# The sender's words for those (services/sender/curl.py), and "timed out".
_UNSURE = ("timed out", *sorted(MAY_HAVE_ARRIVED))


def may_have_reached_provider(last_error: str | None) -> bool:
    return last_error is not None and any(marker in last_error for marker in _UNSURE)
