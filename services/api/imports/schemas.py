from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OnConflict(StrEnum):
    SKIP = "skip"  # a phone that already has a live client leaves that client as it is
    UPDATE = "update"  # the file's tag, timezone, operator code and opt-out replace its own


class RejectedRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    line: int = Field(description="The file's line number; the header is line 1", examples=[7])
    field: str | None = Field(
        description="The column at fault; null when the row as a whole is", examples=["phone"]
    )
    reason: str = Field(
        examples=["10 digits without a country code are ambiguous: write 7 or 8 in front"]
    )


class ImportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(examples=[12])
    status: Literal["running", "done", "failed"] = Field(examples=["done"])
    on_conflict: OnConflict
    rows: int = Field(description="Data rows in the file (blank lines not counted)", examples=[4])
    created: int = Field(examples=[2])
    updated: int = Field(examples=[0])
    skipped: int = Field(
        description="Valid rows whose phone already had a live client that stayed as it was",
        examples=[1],
    )
    rejected: int = Field(examples=[1])
    normalized: int = Field(
        0,
        description="Imported rows whose phone was written another way (+7 (916) 123-45-67,"
        " 8 916 123 45 67, 89161234567) and stored as 7 followed by 10 digits",
        examples=[1],
    )
    error: str | None = Field(
        None, description="Why a failed import failed (it changed nothing)", examples=[None]
    )
    bytes: int = Field(description="Size of the uploaded file", examples=[161])
    actor: str | None = Field(description="The token or user that sent it", examples=["ops"])
    created_at: datetime
    finished_at: datetime | None


class ImportDetail(ImportOut):
    rejected_rows: list[RejectedRow] = Field(
        description="The first 1,000 rejected rows by line; all of them at `/rejected` as CSV",
        examples=[[{"line": 4, "field": "phone", "reason": "duplicate of line 2"}]],
    )
