"""Who is making a request: a named API token or a user signed in to the console.

Both the REST API (bearer tokens from API_TOKENS) and the console (OpenID Connect sessions)
turn their credentials into an `Actor`; service functions that change data take it to check
the role and to write the audit log in the same transaction as the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    ADMIN = "admin"  # may do everything the REST API allows
    VIEWER = "viewer"  # reads everything, changes nothing


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # the token's name (`token-1`, or the name in `name:role:token`) or the user's login
    role: Role
    kind: Literal["token", "user"]
    request_id: str | None = None  # the X-Request-ID of the response that made the change
    source: str | None = None  # the client's address
    # A console user's identity at the identity provider (`name` is only what is shown).
    subject: str | None = None
    issuer: str | None = None

    @property
    def may_change(self) -> bool:
        return self.role is Role.ADMIN
