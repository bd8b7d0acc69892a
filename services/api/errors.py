"""Every error is JSON `{"detail": ..., "errors": [...]}` with a message a person can act on."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


class NotFound(ApiError):
    def __init__(self, what: str, ident: int) -> None:
        super().__init__(404, f"{what} {ident} not found")


class Conflict(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


class Unprocessable(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(422, detail)


class TooManyRequests(ApiError):
    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(429, detail, {"Retry-After": str(retry_after_s)})


def _field_message(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"] if part not in ("body", "query", "path"))
    msg = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def api_error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def http_error_response(exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """The REST API's handlers (the console, mounted after, answers its own paths in HTML)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": list(e["loc"]),
                "msg": str(e["msg"]).removeprefix("Value error, "),
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        detail = "invalid request: " + "; ".join(_field_message(e) for e in exc.errors())
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_error_response(exc)
