"""What the page modules share: redirects after a POST, field errors, the static files."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import ValidationError

from services.api.ui.templating import LANG_COOKIE, LANGUAGES, UI_DIR

STATIC_DIR = (UI_DIR / "static").resolve()
YEAR_S = 365 * 24 * 3600

static_router = APIRouter(include_in_schema=False)


@static_router.get("/ui/static/{path:path}", name="ui_static")
async def static_file(path: str) -> Response:
    """The console's CSS, scripts and vendored libraries (no session needed, nothing secret)."""
    target = (STATIC_DIR / path).resolve()
    if not target.is_relative_to(STATIC_DIR) or not target.is_file():
        raise HTTPException(404, "not found")
    # Vendored files carry their version in the name; ours change with a release.
    cache = "public, max-age=31536000, immutable" if "/vendor/" in f"/{path}" else "no-cache"
    return FileResponse(target, headers={"Cache-Control": cache})


def safe_next(value: str | None) -> str:
    """A console path to go back to (after sign-in, or a language switch); anything else
    (another site, `//host`, `/\\host`, a scheme, control characters) becomes the dashboard."""
    if (
        not value
        or not (value == "/ui" or value.startswith("/ui/") or value.startswith("/ui?"))
        or "\\" in value
        or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value)
    ):
        return "/ui/"
    return value


@static_router.get("/ui/language", name="ui_language")
async def choose_language(lang: str, next: str | None = None) -> Response:
    """Remember the chosen language in a cookie and go back to the page."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, lang, max_age=YEAR_S, path="/ui", httponly=True, samesite="lax"
        )
    return response


def see_other(url: str, **query: object) -> RedirectResponse:
    """The redirect after a successful POST (Post/Redirect/Get)."""
    given = {name: value for name, value in query.items() if value is not None}
    return RedirectResponse(f"{url}?{urlencode(given)}" if given else url, status_code=303)


def field_errors(exc: ValidationError, aliases: dict[str, str] | None = None) -> dict[str, str]:
    """Pydantic's errors keyed by form field (the first part of each error's location)."""
    aliases = aliases or {}
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = aliases.get(".".join(loc), aliases.get(loc[0], loc[0])) if loc else "form"
        errors.setdefault(name, str(error["msg"]).removeprefix("Value error, "))
    return errors


def split_list(value: str) -> list[str]:
    """A comma- or space-separated form field as a list."""
    return [part for part in value.replace(",", " ").split() if part]


def form_text(form: object, name: str) -> str:
    value = form.get(name, "")  # type: ignore[attr-defined]
    return value.strip() if isinstance(value, str) else ""


def current_url(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
