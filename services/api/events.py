"""Wake-up hints for the scheduler, published after a mailing change commits.

PostgreSQL is the truth: a lost event only delays work until the scheduler's next poll,
so a failed publish is logged and never fails the request.
"""

from __future__ import annotations

from typing import Protocol


class EventPublisher(Protocol):
    async def mailing_changed(self, event: str, mailing_id: int) -> None: ...


class NoEvents:
    async def mailing_changed(self, event: str, mailing_id: int) -> None:
        return None
