from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field

from services.api.schemas import InputModel, no_nul
from shared.domain.clients import (
    MAX_TAG_LENGTH,
    OPERATOR_CODE_MESSAGE,
    PHONE_MESSAGE,
    TAG_MESSAGE,
    TIMEZONE_MESSAGE,
    is_valid_operator_code,
    is_valid_phone,
    is_valid_timezone,
    normalize_phone,
    phone_refusal,
)


def _phone(value: str) -> str:
    if not is_valid_phone(value):
        raise ValueError(PHONE_MESSAGE)
    return value


def _operator_code(value: str) -> str:
    if not is_valid_operator_code(value):
        raise ValueError(OPERATOR_CODE_MESSAGE)
    return value


def _timezone(value: str) -> str:
    if not is_valid_timezone(value):
        raise ValueError(TIMEZONE_MESSAGE)
    return value


Phone = Annotated[str, AfterValidator(_phone), Field(examples=["79123456789"])]

# Whether a client's phone may come as people write it (`+7 (916) 123-45-67`): set for each
# request by the REST API's `normalize_phone` parameter, and by the console's client form.
_NORMALIZING_PHONES: ContextVar[bool] = ContextVar("normalizing_phones", default=False)


def set_normalizing_phones(on: bool) -> None:
    """For the request under way (a dependency of each route that takes a client's phone)."""
    _NORMALIZING_PHONES.set(on)


@contextmanager
def normalizing_phones() -> Iterator[None]:
    """Validate client bodies inside with phones normalised (the console's form)."""
    token = _NORMALIZING_PHONES.set(True)
    try:
        yield
    finally:
        _NORMALIZING_PHONES.reset(token)


def _client_phone(value: str) -> str:
    if is_valid_phone(value):
        return value
    if not _NORMALIZING_PHONES.get():
        raise ValueError(PHONE_MESSAGE)
    normalized = normalize_phone(value)
    if normalized is None:
        raise ValueError(phone_refusal(value))
    return normalized


ClientPhone = Annotated[
    str,
    AfterValidator(_client_phone),
    Field(
        examples=["79123456789"],
        description="7 followed by 10 digits; with `normalize_phone=true` also as people write"
        " it (+7 (916) 123-45-67, 8 916 123 45 67, 89161234567), stored as 79161234567",
    ),
]
OperatorCode = Annotated[str, AfterValidator(_operator_code), Field(examples=["912"])]


def _tag(value: str) -> str:
    if len(value) > MAX_TAG_LENGTH:
        raise ValueError(TAG_MESSAGE)
    return no_nul(value)


# The length rule is checked by `_tag` (the import's message) and shown in the schema.
Tag = Annotated[
    str,
    AfterValidator(_tag),
    Field(examples=["vip"], json_schema_extra={"maxLength": MAX_TAG_LENGTH}),
]
TimeZone = Annotated[str, AfterValidator(_timezone), Field(examples=["Europe/Moscow"])]


class ClientCreate(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"phone": "79123456789", "tag": "vip", "timezone": "Europe/Moscow"}]
        }
    )

    phone: ClientPhone
    operator_code: OperatorCode | None = Field(
        None, description="Defaults to the phone's digits 2-4 (79123456789 -> 912)"
    )
    tag: Tag = ""
    timezone: TimeZone
    opted_out: bool | None = Field(
        None,
        description="An opted-out client gets no message; on create null means false, on PUT"
        " null leaves it as it is",
    )


class ClientPatch(InputModel):
    """Only the fields given change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"tag": "regular"}]})

    phone: ClientPhone | None = None
    operator_code: OperatorCode | None = None
    tag: Tag | None = None
    timezone: TimeZone | None = None
    opted_out: bool | None = Field(
        None, description="true opts the client out (its undelivered messages are cancelled)"
    )


class ClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    phone: str = Field(examples=["79123456789"])
    operator_code: str = Field(examples=["912"])
    tag: str = Field(examples=["vip"])
    timezone: str = Field(examples=["Europe/Moscow"])
    opted_out_at: datetime | None = Field(None, description="When the client opted out")
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def opted_out(self) -> bool:
        return self.opted_out_at is not None
