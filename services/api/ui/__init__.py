"""The admin console under /ui/: sign-in (services/api/ui/auth), the pages
(services/api/ui/pages) and their static files."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from services.api.errors import ApiError, api_error_response, http_error_response
from services.api.ui import pages
from services.api.ui.auth.oidc import Provider
from services.api.ui.auth.router import router as auth_router
from services.api.ui.auth.router import safe_next, start_sign_in
from services.api.ui.deps import NotAllowed, NotSignedIn, SsoNotConfigured
from services.api.ui.templating import N_, render
from shared.settings import ApiSettings

SIGN_IN_COOKIE = "mailing_signin"
SIGN_IN_MAX_AGE_S = 600


def _current_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _console_page(request: Request) -> bool:
    """A page of the console (its static files and everything else answer JSON errors)."""
    path = request.url.path
    return (path == "/ui" or path.startswith("/ui/")) and not path.startswith("/ui/static/")


# What a person is told instead of the REST API's JSON, by status (the detail is English and
# for developers; a 409's or 422's own words appear beside the form that caused them).
_NOT_FOUND = (N_("Not found"), N_("This page does not exist, or what it showed has been deleted."))
_ERROR_PAGES = {404: _NOT_FOUND, 405: _NOT_FOUND}
_ERROR_DEFAULT = (N_("Not done"), N_("The request could not be carried out."))


def _error_page(request: Request, status_code: int, headers: Mapping[str, str] | None) -> Response:
    title, message = _ERROR_PAGES.get(status_code, _ERROR_DEFAULT)
    response = render(
        request, "error.html", {"title": title, "message": message, "translated": True},
        status_code=status_code,
    )  # fmt: skip
    response.headers.update(headers or {})
    return response


def install_console_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _console_page(request):
            return _error_page(request, exc.status_code, exc.headers)
        return http_error_response(exc)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if _console_page(request):
            return _error_page(request, exc.status_code, exc.headers)
        return api_error_response(exc)

    @app.exception_handler(SsoNotConfigured)
    async def _not_configured(request: Request, _: SsoNotConfigured) -> Response:
        return render(request, "auth/not_configured.html", {}, status_code=503)

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if exc.polled:
            # A page asking by itself: the live area says the session ended (286 stops htmx's
            # polling); following a sign-in redirect here would renew the session unattended.
            page = urlsplit(request.headers.get("hx-current-url", ""))
            back = safe_next(page.path + (f"?{page.query}" if page.query else ""))
            return render(
                request,
                "partials/session_ended.html",
                {"sign_in": f"/ui/auth/login?{urlencode({'next': back})}"},
                status_code=286 if request.headers.get("hx-request") else 401,
            )
        if request.headers.get("hx-request"):
            # htmx would swap the provider's page into a fragment: make it load the page.
            current = urlsplit(request.headers.get("hx-current-url", ""))
            back = safe_next(current.path + (f"?{current.query}" if current.query else ""))
            target = f"/ui/auth/login?{urlencode({'next': back})}"
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method in ("GET", "HEAD"):
            return await start_sign_in(request, _current_path(request))
        return RedirectResponse("/ui/auth/login", status_code=303)

    @app.exception_handler(NotAllowed)
    async def _not_allowed(request: Request, exc: NotAllowed) -> Response:
        user = exc.user
        return render(
            request,
            "auth/forbidden.html",
            {
                "user": user,
                "reason": exc.reason,
                "account": (user.email or user.login) if user else "",
            },
            status_code=403,
        )


def mount_console(app: FastAPI, settings: ApiSettings) -> None:
    """Adds the console to the API app (called by create_app)."""
    secret = settings.ui_session_secret
    app.state.console_provider = Provider(settings) if settings.sso_configured else None
    # The short-lived, signed sign-in state (Authlib's state, nonce, PKCE verifier).
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret.get_secret_value() if secret else secrets.token_urlsafe(32),
        session_cookie=SIGN_IN_COOKIE,
        max_age=SIGN_IN_MAX_AGE_S,
        path="/ui",
        same_site="lax",
        https_only=settings.ui_base_url.startswith("https://"),
    )
    install_console_errors(app)
    app.include_router(auth_router)
    for router in pages.routers:
        app.include_router(router)
    # /ui/static is served by the pages' static router (services/api/ui/pages/common.py).
