from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.api.mailings.schemas import DeliveryCounts


class OperatorOutcomes(DeliveryCounts):
    operator_code: str = Field(examples=["905"])


class ProviderOut(BaseModel):
    """A provider of the providers file, as the senders report it. Never a secret: no token,
    password, URL or host."""

    name: str = Field(examples=["aggregator"])
    kind: Literal["fabrique", "smpp", "kannel"]
    max_tps: float | None = Field(description="The file's cap for all senders; null: none")
    state: Literal["up", "degraded", "down", "unknown"] = Field(
        description="up: every sender can send to it; down: none can (binds down, breaker "
        "open, account refused); degraded: some can; unknown: no sender reported it lately"
    )
    senders: int = Field(description="Sender replicas that reported it in the last 30 s")
    binds_up: int | None = Field(description="SMPP binds up over all senders (smpp only)")
    binds: int | None = Field(description="SMPP binds configured over all senders")
    breaker: Literal["closed", "half_open", "open"] | None = Field(
        description="The worst circuit-breaker state among the senders"
    )
    reason: str = Field(description="Why it cannot take messages (a bind error, the breaker)")
    rate: float = Field(description="Messages per second the senders send to it now")
    last_hour: DeliveryCounts = Field(
        description="Messages it took whose row changed in the last hour, by receipt"
    )
    by_operator: list[OperatorOutcomes] = Field(description="last_hour per operator code")


PROVIDERS_EXAMPLE = [
    {
        "name": "aggregator",
        "kind": "smpp",
        "max_tps": 100.0,
        "state": "up",
        "senders": 2,
        "binds_up": 2,
        "binds": 2,
        "breaker": "closed",
        "reason": "",
        "rate": 87.5,
        "last_hour": {
            "awaiting_receipt": 120,
            "delivered": 9400,
            "undelivered": 180,
            "delivery_rate": 0.9812,
        },
        "by_operator": [
            {
                "operator_code": "900",
                "awaiting_receipt": 120,
                "delivered": 9400,
                "undelivered": 180,
                "delivery_rate": 0.9812,
            }
        ],
    }
]
