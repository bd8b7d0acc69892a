"""Rendering console pages: Jinja2 templates with the user, CSRF token, language and times.

Catalogs are read from the `.po` files at import (no compile step on a fresh clone); the
language comes from the remembered switch (cookie) or else the browser's Accept-Language.
Times are shown in the admin's time zone (cookie `ui_tz`, set by the browser or the mailing
form), with the UTC moment on hover.
"""

from __future__ import annotations

import gettext
import io
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

UI_DIR = Path(__file__).parent
I18N_DIR = UI_DIR / "i18n"
LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "ui_lang"
TZ_COOKIE = "ui_tz"
DEFAULT_TIMEZONE = "UTC"

templates = Jinja2Templates(directory=UI_DIR / "templates")
templates.env.autoescape = True


@cache
def catalog(lang: str) -> gettext.NullTranslations:
    """The language's translations, compiled in memory from its `.po` file."""
    po_path = I18N_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == DEFAULT_LANGUAGE or not po_path.exists():
        return gettext.NullTranslations()
    with po_path.open("rb") as po_file:
        messages = read_po(po_file, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, messages)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def language(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    accepted = [
        part.split(";")[0].strip().replace("-", "_")
        for part in request.headers.get("accept-language", "").split(",")
        if part.strip()
    ]
    try:
        negotiated = Locale.negotiate(accepted, list(LANGUAGES), sep="_")
    except (UnknownLocaleError, ValueError):
        negotiated = None
    return negotiated.language if negotiated else DEFAULT_LANGUAGE


def gettext_for(request: Request) -> Any:
    """The `_` of the request's language, for strings made in Python (`%(name)s` values)."""
    translations = catalog(language(request))

    def translate(message: str, **values: object) -> str:
        text = translations.gettext(message)
        return text % values if values else text

    return translate


@cache
def timezone_names() -> list[str]:
    return sorted(available_timezones())


def admin_timezone(request: Request) -> str:
    # The browser writes the cookie with encodeURIComponent ("Europe%2FMoscow"); the mailing
    # form's answer writes it plainly. Either reads as the zone.
    chosen = unquote(request.cookies.get(TZ_COOKIE, ""))
    return chosen if chosen in timezone_names() else DEFAULT_TIMEZONE


def local_time(moment: datetime | None, tz: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> Markup:
    """A `<time>` in the admin's zone with the UTC moment on hover; an em dash for none."""
    if moment is None:
        return Markup("—")
    utc = moment.astimezone(UTC)
    local = moment.astimezone(ZoneInfo(tz))
    return Markup('<time datetime="{iso}" title="{utc} UTC">{local}</time>').format(
        iso=utc.isoformat(),
        utc=utc.strftime("%Y-%m-%d %H:%M:%S"),
        local=local.strftime(fmt),
    )


def number(value: object) -> str:
    if not isinstance(value, int | float):
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}".replace(",", "\u202f")
    return f"{value:,}".replace(",", "\u202f")


def N_(message: str) -> str:
    """Marks a string for the catalog; it is translated where it is shown."""
    return message


# What the page after a redirect says happened (`?notice=...`).
NOTICES = {
    "created": N_("Created."),
    "saved": N_("Saved."),
    "normalized": N_("Saved; the phone was stored as 7 followed by 10 digits."),
    "deleted": N_("Deleted."),
    "paused": N_("Paused."),
    "resumed": N_("Resumed."),
    "approved": N_("Approved: the mailing starts at its start time (at once if that has passed)."),
    "cancelled": N_("Cancelled: nothing more is sent."),
    "cloned": N_("Cloned: this is the new mailing."),
    "retried": N_("Failed messages made due again: %(count)s."),
    "test_sent": N_("Test send accepted: its status is below."),
    "uploaded": N_("Uploaded; the import runs on this page."),
}


# Statuses are shown through the catalog by their value (`_(status)` in the templates).
STATUS_WORDS = (
    N_("scheduled"), N_("awaiting_approval"), N_("running"), N_("paused"), N_("completed"),
    N_("cancelled"), N_("pending"), N_("queued"), N_("sending"), N_("sent"), N_("retrying"),
    N_("failed"), N_("expired"), N_("done"), N_("admin"), N_("viewer"),
    N_("delivered"), N_("undelivered"), N_("closed"), N_("half_open"), N_("open"),
)  # fmt: skip


def _csrf_token(request: Request, user: object) -> str:
    token = getattr(user, "csrf_token", None) or getattr(request.state, "csrf_token", None)
    return str(token or "")


def _may_change(user: object) -> bool:
    return bool(getattr(user, "may_change", False))


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200
) -> HTMLResponse:
    """Render a template with `user` (may be None), `csrf_token`, `lang`, `_` and `tz`."""
    context = dict(context or {})
    user = context.pop("user", getattr(request.state, "user", None))
    lang = language(request)
    tz = admin_timezone(request)
    translations = catalog(lang)

    def translate(message: str, **values: object) -> str:
        text = translations.gettext(message)
        if any(isinstance(value, Markup) for value in values.values()):
            # A value that is markup (a <time>): the rest is escaped, the markup kept.
            return escape(text) % values
        return text % values if values else text

    notice = NOTICES.get(request.query_params.get("notice", ""))
    count = request.query_params.get("count", "")
    notice_text: str | None
    if notice and "%(count)s" in notice:
        notice_text = translate(
            notice, count=int(count) if count.isascii() and count.isdigit() else 0
        )
    else:
        notice_text = translate(notice) if notice else None
    context.setdefault("flash", notice_text)
    context.update(
        user=user,
        csrf_token=_csrf_token(request, user),
        lang=lang,
        languages=LANGUAGES,
        _=translate,
        gettext=translate,
        ngettext=translations.ngettext,
        pgettext=translations.pgettext,  # one English word, two meanings: pgettext(context, word)
        tz=tz,
        when=lambda moment, fmt="%Y-%m-%d %H:%M:%S": local_time(moment, tz, fmt),
        number=number,
        may_change=_may_change(user),
        escape=escape,
        zone_info=ZoneInfo,
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)
