"""Per-request id, access log and Prometheus metrics for the API (a pure ASGI middleware)."""

from __future__ import annotations

import time
import uuid

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("api")

REQUESTS = Counter("mailing_api_requests_total", "API requests", ["method", "route", "status"])
LATENCY = Histogram(
    "mailing_api_request_seconds",
    "API request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUEST_ID_HEADER = b"x-request-id"
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and 0 < len(value) <= 128 and value.isascii():
            return value.decode()
    return uuid.uuid4().hex


def request_id_of(scope: Scope) -> str | None:
    """The id the middleware gave this request (the response's X-Request-ID)."""
    return scope.get("state", {}).get("request_id")


def _route_template(scope: Scope) -> str:
    """The path with its parameters named, not valued: ids would explode the label set."""
    if scope.get("route") is None:
        return "unmatched"
    params = {str(value): name for name, value in scope.get("path_params", {}).items()}
    return "/".join(
        "{" + params[part] + "}" if part in params else part for part in scope["path"].split("/")
    )


class RequestObservability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                template = _route_template(scope)
                method = scope["method"]
                REQUESTS.labels(method, template, str(status)).inc()
                LATENCY.labels(method, template).observe(elapsed)
                if scope["path"] not in _QUIET_PATHS:
                    log.info(
                        "request",
                        method=method,
                        path=scope["path"],
                        status=status,
                        duration_ms=round(elapsed * 1000, 1),
                    )
