from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.api.schemas import InputModel, no_nul
from shared.domain.clients import is_valid_operator_code, is_valid_phone, is_valid_timezone

MAX_TAG_LENGTH = 100


def _phone(value: str) -> str:
    if not is_valid_phone(value):
        raise ValueError("phone must be 7 followed by 10 digits, e.g. 79123456789")
    return value


def _operator_code(value: str) -> str:
    if not is_valid_operator_code(value):
        raise ValueError("operator_code must be exactly 3 digits, e.g. 912")
    return value


def _timezone(value: str) -> str:
    if not is_valid_timezone(value):
        raise ValueError("timezone must be an IANA time zone name, e.g. Europe/Moscow")
    return value


Phone = Annotated[str, AfterValidator(_phone), Field(examples=["79123456789"])]
OperatorCode = Annotated[str, AfterValidator(_operator_code), Field(examples=["912"])]
Tag = Annotated[str, Field(max_length=MAX_TAG_LENGTH, examples=["vip"]), AfterValidator(no_nul)]
TimeZone = Annotated[str, AfterValidator(_timezone), Field(examples=["Europe/Moscow"])]


class ClientCreate(InputModel):
    phone: Phone
    operator_code: OperatorCode | None = Field(
        None, description="Defaults to the phone's digits 2-4 (79123456789 -> 912)"
    )
    tag: Tag = ""
    timezone: TimeZone


class ClientPatch(InputModel):
    """Only the fields given change."""

    phone: Phone | None = None
    operator_code: OperatorCode | None = None
    tag: Tag | None = None
    timezone: TimeZone | None = None


class ClientOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    phone: str = Field(examples=["79123456789"])
    operator_code: str = Field(examples=["912"])
    tag: str = Field(examples=["vip"])
    timezone: str = Field(examples=["Europe/Moscow"])
    created_at: datetime
    updated_at: datetime
