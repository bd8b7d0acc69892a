"""Security headers for what a browser loads from the api: the console (/ui) and /docs.

Every response: `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, and HSTS
when UI_BASE_URL is https. Console pages and /docs also get a Content-Security-Policy (scripts
and styles from our own origin only, no framing) and the console's pages and files
`Cache-Control: no-store` (they show phones, names and exports; only /ui/static is cacheable).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain are not ours


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def console_policy(form_targets: list[str]) -> str:
    """The console's CSP. Forms may post to the console and be redirected to the identity
    provider (sign-out ends the provider's session too), so its origin is a form target."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action " + " ".join(["'self'", *form_targets]),
        ]
    )


# Swagger UI as the console: its scripts and styles from our origin only (React sets styles
# through the DOM, which a policy does not govern); it may call the api it documents.
DOCS_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)


def _console(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def _docs(path: str) -> bool:
    return path == "/docs" or path.startswith("/docs/")


class BrowserSecurityHeaders:
    def __init__(self, app: ASGIApp, *, ui_base_url: str, issuer: str | None) -> None:
        self.app = app
        self.hsts = ui_base_url.startswith("https://")
        self.console_csp = console_policy([_origin(issuer)] if issuer else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "same-origin"
                if self.hsts:
                    headers["Strict-Transport-Security"] = HSTS
                if _console(path):
                    headers["Content-Security-Policy"] = self.console_csp
                    headers["X-Frame-Options"] = "DENY"
                    if not path.startswith("/ui/static/"):
                        headers["Cache-Control"] = "no-store"
                elif _docs(path):
                    headers["Content-Security-Policy"] = DOCS_POLICY
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)
