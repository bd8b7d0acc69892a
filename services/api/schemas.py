"""Shapes shared by every resource: errors and pagination."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL characters: refuse them as invalid input."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class InputModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "phone"]])
    msg: str = Field(examples=["phone must be 7 followed by 10 digits, e.g. 79123456789"])
    type: str = Field(examples=["value_error"])


class ErrorResponse(BaseModel):
    detail: str = Field(examples=["client 42 not found"])
    errors: list[FieldError] | None = Field(
        None, description="Per-field problems, for validation errors"
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after_id: int | None = Field(
        description="Pass as `after_id` to get the next page; null on the last page",
        examples=[None],
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
    404: {"model": ErrorResponse, "description": "No such resource (or it was deleted)"},
    409: {"model": ErrorResponse, "description": "Conflicts with the current state"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    422: {"model": ErrorResponse, "description": "Invalid input; nothing was changed"},
    429: {
        "model": ErrorResponse,
        "description": "Too many failed authentications from this address"
        " (AUTH_FAILURES_PER_MINUTE): wait `Retry-After` seconds",
    },
}
