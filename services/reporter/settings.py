"""Configuration of the daily report (environment, like every other service)."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.settings import BaseServiceSettings


class ReporterSettings(BaseServiceSettings):
    metrics_port: int = Field(9103, ge=0, le=65535)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    # none: plain SMTP; starttls: upgrade after connecting (usually 587); tls: implicit TLS (465).
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(30.0, gt=0)
    report_from: str = "mailing-reports@localhost"
    # Comma-separated addresses; the reporter refuses to start without one.
    report_recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Time of day (UTC) at which the loop mode sends the report for the previous day.
    report_at: time = time(6, 0)
    # Loop mode: a failed report is retried this many times, this many seconds apart.
    report_max_attempts: int = Field(5, ge=1)
    report_retry_s: float = Field(300.0, gt=0)

    @field_validator("report_recipients", mode="before")
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        if isinstance(value, str):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    @field_validator("report_recipients")
    @classmethod
    def _plausible_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address or any(c.isspace() for c in address):
                raise ValueError(f"not an e-mail address: {address!r}")
        return value

    @field_validator("report_at")
    @classmethod
    def _naive_utc(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("REPORT_AT is a UTC time of day without an offset, e.g. 06:00")
        return value
