"""When a mailing would finish at a route's rate: the pre-send check's `finishes_at`.

A route sending at most `max_tps` messages a second needs recipients / max_tps seconds of
sending; with a send window it sends only during the window's hours, counted here in one zone
(the check uses the mailing's reference zone, UTC by default: clients spread over several
zones make the real finish somewhat earlier, never later than the last zone's).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.domain.send_window import SendWindow, is_window_open, next_window_open

# Walking a window a day at a time: a mailing needing more than ten years is "cannot finish".
_MAX_DAYS = 3653


def finishes_at(
    *,
    recipients: int,
    max_tps: float | None,
    start_at: datetime,
    window: SendWindow | None,
    zone: str = "UTC",
) -> datetime | None:
    """When the last message would go, or None when the rate is unknown (no cap)."""
    if max_tps is None:
        return None
    need = timedelta(seconds=recipients / max_tps)
    if window is None:
        return start_at + need
    tz = ZoneInfo(zone)
    moment = start_at
    for _ in range(_MAX_DAYS * 2):
        if not is_window_open(window, zone, moment):
            moment = next_window_open(window, zone, moment)
        closes = _window_close(window, moment.astimezone(tz))
        available = closes - moment
        if need <= available:
            return moment + need
        need -= available
        moment = closes
    return None


def _window_close(window: SendWindow, local: datetime) -> datetime:
    """When the window open at `local` closes."""
    close = local.replace(hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0)
    if close <= local:
        close += timedelta(days=1)
    return close


def can_finish(finish: datetime | None, end_at: datetime, *, rate_known: bool) -> bool:
    """Whether the route's last message would go before the end time (True with no rate cap)."""
    if not rate_known:
        return True
    return finish is not None and finish <= end_at
