"""Console pages over httpx with real sessions: what they show, and that every change goes
through the REST API's service functions (same validation, same 409s), admins only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.api.helpers import insert_clients, insert_mailing, insert_messages
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

PAGES = [
    "/ui/",
    "/ui/mailings",
    "/ui/mailings/new",
    "/ui/clients",
    "/ui/clients/new",
    "/ui/imports",
    "/ui/audit",
    "/ui/providers",
]


@pytest.fixture
def db(clean_db: str):
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


def local_input(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_answers_in_both_languages(
    console_client: ConsoleClient, path: str
) -> None:
    admin = await console_client("admin")
    english = await admin.get(path, headers={"Accept-Language": "en-US,en;q=0.9"})
    assert english.status_code == 200, english.text
    for word in ("Dashboard", "Mailings", "Clients", "Imports", "Audit log", "Sign out"):
        assert word in english.text
    russian = await admin.get(path, headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert russian.status_code == 200
    assert 'lang="ru"' in russian.text
    assert "Рассылки" in russian.text and "Выйти" in russian.text
    assert "Импорт" in russian.text and "Журнал действий" in russian.text


async def test_the_language_switch_is_remembered(console_client: ConsoleClient) -> None:
    admin = await console_client("admin")
    switched = await admin.get("/ui/language", params={"lang": "ru", "next": "/ui/clients"})
    assert switched.status_code == 303 and switched.headers["location"] == "/ui/clients"
    page = await admin.get("/ui/clients", headers={"Accept-Language": "en"})
    assert "Клиенты" in page.text
    away = await admin.get("/ui/language", params={"lang": "en", "next": "https://elsewhere"})
    assert away.headers["location"] == "/ui/"


async def test_without_a_session_no_page_or_fragment_is_shown(console_app) -> None:
    """(Where the browser is sent instead is the sign-in's business: tests of auth.)"""
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=console_app), base_url="http://console.test"
    ) as anonymous:
        for path in [*PAGES, "/ui/dashboard/live", "/ui/dashboard/rate.json"]:
            response = await anonymous.get(path)
            assert response.status_code != 200, path
            assert "Sign out" not in response.text and "Running and scheduled" not in response.text
            fragment = await anonymous.get(path, headers={"HX-Request": "true"})
            if "/live" in path or path.endswith(".json"):
                # Polled by the page itself: it says the session ended (286 stops the polling)
                # and does not send the tab to sign in unattended (tests/security).
                assert fragment.status_code in (286, 401), path
                assert "HX-Redirect" not in fragment.headers, path
            else:
                assert fragment.status_code == 401 and "HX-Redirect" in fragment.headers, path


async def test_admin_creates_a_client_and_sees_field_errors(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    bad = await admin.post(
        "/ui/clients",
        data={"csrf_token": token, "phone": "812", "timezone": "Mars/Olympus", "tag": ""},
    )
    assert bad.status_code == 422
    assert 'id="e-phone"' in bad.text and 'id="e-timezone"' in bad.text
    assert db.execute("SELECT count(*) FROM client").fetchone() == (0,)

    created = await admin.post(
        "/ui/clients",
        data={
            "csrf_token": token,
            "phone": "79123456789",
            "timezone": "Europe/Moscow",
            "tag": "vip",
        },
    )
    assert created.status_code == 303
    assert db.execute("SELECT phone, operator_code, tag FROM client").fetchall() == [
        ("79123456789", "912", "vip")
    ]
    duplicate = await admin.post(
        "/ui/clients",
        data={"csrf_token": token, "phone": "79123456789", "timezone": "UTC"},
    )
    assert duplicate.status_code == 409 and "already exists" in duplicate.text
    found = await admin.get("/ui/clients", params={"phone": "79123456789"})
    assert "79123456789" in found.text and "Europe/Moscow" in found.text


async def test_admin_creates_pauses_resumes_and_deletes_a_mailing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    token = admin.csrf_token  # type: ignore[attr-defined]
    start = datetime.now(UTC) + timedelta(hours=1)
    form = {
        "csrf_token": token,
        "text": "Скидка 20%",
        "tz": "UTC",
        "start_at": local_input(start),
        "end_at": local_input(start - timedelta(hours=2)),
        "operator_codes": "912",
        "tags": "",
        "window_start": "09:00",
        "window_end": "21:00",
    }
    refused = await admin.post("/ui/mailings", data=form)
    assert refused.status_code == 422 and "end_at must be after start_at" in refused.text
    form["end_at"] = local_input(start + timedelta(days=1))
    created = await admin.post("/ui/mailings", data=form)
    assert created.status_code == 303, created.text
    mailing_id = int(re.search(r"/ui/mailings/(\d+)", created.headers["location"])[1])  # type: ignore[index]
    page = await admin.get(f"/ui/mailings/{mailing_id}")
    assert "<progress" in page.text and "Pause" in page.text
    assert "the mailing starts at" in page.text
    assert 'hx-trigger="every 1s"' in page.text  # a scheduled mailing refreshes until it runs

    paused = await admin.post(f"/ui/mailings/{mailing_id}/pause", data={"csrf_token": token})
    assert paused.status_code == 303
    assert db.execute("SELECT status FROM mailing").fetchone() == ("paused",)
    live = await admin.get(f"/ui/mailings/{mailing_id}/live")
    assert "hx-trigger" not in live.text  # nothing runs: it stops refreshing
    resumed = await admin.post(f"/ui/mailings/{mailing_id}/resume", data={"csrf_token": token})
    assert resumed.status_code == 303
    assert db.execute("SELECT status FROM mailing").fetchone() == ("scheduled",)

    deleted = await admin.post(f"/ui/mailings/{mailing_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert db.execute("SELECT status FROM mailing").fetchone() == ("cancelled",)


async def test_create_pressed_twice_makes_one_mailing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    shown = await admin.get("/ui/mailings/new")
    assert shown.headers["cache-control"] == "no-store"
    key = re.search(r'name="form_key" value="([^"]+)"', shown.text)
    assert key is not None
    start = datetime.now(UTC) + timedelta(hours=1)
    form = {
        "csrf_token": admin.csrf_token,  # type: ignore[attr-defined]
        "form_key": key[1],
        "text": "Once",
        "tz": "UTC",
        "start_at": local_input(start),
        "end_at": local_input(start + timedelta(days=1)),
    }
    first = await admin.post("/ui/mailings", data=form)
    second = await admin.post("/ui/mailings", data=form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert db.execute("SELECT count(*) FROM mailing").fetchone() == (1,)
    # Another form shown is another key: a second mailing with the same text is made.
    again = await admin.get("/ui/mailings/new")
    other = re.search(r'name="form_key" value="([^"]+)"', again.text)
    assert other is not None and other[1] != key[1]
    third = await admin.post("/ui/mailings", data={**form, "form_key": other[1]})
    assert third.status_code == 303 and third.headers["location"] != first.headers["location"]
    assert db.execute("SELECT count(*) FROM mailing").fetchone() == (2,)


async def test_a_running_mailing_shows_counts_and_why_messages_wait(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 4, timezone="Europe/Moscow")
    mailing_id = insert_mailing(db, status="running", text="Привет")
    ids = insert_messages(db, mailing_id, clients[:2], status="sent")
    insert_messages(db, mailing_id, clients[2:], status="retrying")
    db.execute(
        "UPDATE message SET not_before = now() + interval '4 minutes', attempts = 1,"
        " last_error = 'HTTP 503' WHERE status = 'retrying'"
    )
    admin = await console_client("admin")
    page = await admin.get(f"/ui/mailings/{mailing_id}")
    assert page.status_code == 200
    assert 'max="4" value="2"' in page.text
    assert "a retry is due at" in page.text and "HTTP 503" in page.text
    assert 'name="confirm_id"' in page.text  # deleting a running one asks for its id
    token = admin.csrf_token  # type: ignore[attr-defined]
    kept = await admin.post(f"/ui/mailings/{mailing_id}/delete", data={"csrf_token": token})
    assert kept.status_code == 422
    assert db.execute("SELECT status FROM mailing").fetchone() == ("running",)
    started = await admin.get(f"/ui/mailings/{mailing_id}/edit")
    assert "Fixed: the mailing has started." in started.text
    assert str(ids[0]) in (await admin.get(f"/ui/mailings/{mailing_id}?msg_status=sent")).text
    listed = await admin.get("/ui/mailings", params={"q": "Привет", "status": "running"})
    assert f"/ui/mailings/{mailing_id}" in listed.text
    assert (
        f"/ui/mailings/{mailing_id}"
        not in (await admin.get("/ui/mailings", params={"status": "paused"})).text
    )


async def test_the_viewer_sees_everything_and_changes_nothing(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 1)
    mailing_id = insert_mailing(db, status="running")
    viewer = await console_client("viewer")
    token = viewer.csrf_token  # type: ignore[attr-defined]
    for path in [*PAGES, f"/ui/mailings/{mailing_id}", f"/ui/clients/{clients[0]}"]:
        page = await viewer.get(path)
        assert page.status_code == 200, path
        assert ">Pause<" not in page.text and ">Delete<" not in page.text
    forged = [
        ("/ui/clients", {"phone": "79000000009", "timezone": "UTC"}),
        (f"/ui/clients/{clients[0]}/delete", {}),
        (f"/ui/mailings/{mailing_id}/pause", {}),
        (f"/ui/mailings/{mailing_id}/delete", {"confirm_id": str(mailing_id)}),
    ]
    for path, fields in forged:
        response = await viewer.post(path, data={"csrf_token": token, **fields})
        assert response.status_code == 403, path
    assert db.execute("SELECT status FROM mailing").fetchone() == ("running",)
    assert db.execute("SELECT count(*) FROM client WHERE deleted_at IS NULL").fetchone() == (1,)


async def test_a_post_without_the_csrf_token_is_refused(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    mailing_id = insert_mailing(db, status="running")
    admin = await console_client("admin")
    response = await admin.post(f"/ui/mailings/{mailing_id}/pause", data={})
    assert response.status_code == 403
    assert db.execute("SELECT status FROM mailing").fetchone() == ("running",)


async def test_preview_and_text_info(console_client: ConsoleClient, db: psycopg.Connection) -> None:
    insert_clients(db, 3, operator_code="912", tag="vip")
    insert_clients(db, 2, first=10, operator_code="916")
    admin = await console_client("admin")
    preview = await admin.get("/ui/mailings-preview", params={"operator_codes": "912", "tags": ""})
    assert "Matches 3 clients now." in preview.text
    info = await admin.get("/ui/text-info", params={"text": "Привет"})
    assert "UCS-2, 6 characters, 1 SMS" in info.text
    assert "GSM-7" in (await admin.get("/ui/text-info", params={"text": "Hi"})).text


async def test_dashboard_counts_today_and_the_send_rate(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 3)
    mailing_id = insert_mailing(db, status="running", text="live one")
    insert_messages(db, mailing_id, clients)
    db.execute("UPDATE message SET status = 'sent' WHERE client_id = ANY(%s)", [clients[:2]])
    db.execute("UPDATE message SET status = 'failed' WHERE client_id = %s", [clients[2]])
    # The per-minute counts come with the scheduler's fold (every FOLD_INTERVAL_S).
    db.execute("SELECT message_count_fold()")
    admin = await console_client("admin")
    page = await admin.get("/ui/dashboard/live")
    assert "live one" in page.text and 'max="3" value="3"' in page.text
    assert re.search(r"sent</dt><dd[^>]*>2<", page.text)
    rate = (await admin.get("/ui/dashboard/rate.json")).json()
    assert len(rate["t"]) == 60 and sum(rate["sent"]) * 60 == pytest.approx(2)


async def test_dashboard_shows_the_senders_breaker_state(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    admin = await console_client("admin")
    none = (await admin.get("/ui/dashboard/live")).text
    # No sender reporting is a warning, not a healthy green.
    assert re.search(r'Circuit breaker</dt>\s*<dd class="warn"\s*title="">\s*no sender', none)
    db.execute(
        "INSERT INTO provider_status (instance, breaker_state, reason) VALUES"
        " ('a:1', 'closed', ''), ('b:2', 'open', 'unauthorized')"
    )
    page = (await admin.get("/ui/dashboard/live")).text
    assert re.search(r'Circuit breaker</dt>\s*<dd class="bad"\s*title="unauthorized">\s*open', page)
    db.execute("UPDATE provider_status SET reported_at = now() - interval '1 minute'")
    assert "no sender" in (await admin.get("/ui/dashboard/live")).text


async def test_parked_jobs_read_zero_before_any_sender_ran_and_unknown_without_a_broker(
    console_client: ConsoleClient, console_app, db: psycopg.Connection
) -> None:
    from types import SimpleNamespace

    from services.api.ui.pages.dashboard import parked_jobs

    console_app.state.ui_parked = None  # not the cached answer of an earlier test
    admin = await console_client("admin")
    page = (await admin.get("/ui/dashboard/live")).text
    # This app's namespace has no parked queue (no sender ever ran in it): nothing was parked.
    assert re.search(r"Parked jobs</dt><dd[^>]*>0</dd>", page), page
    settings = console_app.state.settings.model_copy(
        update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"}
    )
    no_broker = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))
    assert await parked_jobs(no_broker) is None  # type: ignore[arg-type]


def closed_window_mailing(db: psycopg.Connection) -> tuple[int, list[int]]:
    """A running mailing whose send window is closed now in its clients' zone (UTC), with
    pending messages made long ago (their not_before in the past) and a busy last minute."""
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    closes = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    clients = insert_clients(db, 3, timezone="UTC")
    mailing_id = insert_mailing(db, status="running", text="Окно")
    db.execute(
        "UPDATE mailing SET send_window_start = %s, send_window_end = %s WHERE id = %s",
        [opens.time(), closes.time(), mailing_id],
    )
    insert_messages(db, mailing_id, clients[:1], status="sent")
    insert_messages(db, mailing_id, clients[1:], status="pending")
    db.execute("UPDATE message SET not_before = now() - interval '1 hour' WHERE status = 'pending'")
    db.execute(
        "INSERT INTO message_minute (minute, mailing_id, status, count) VALUES"
        " (date_trunc('minute', now()), %s, 'sent', 120)",
        [mailing_id],
    )
    return mailing_id, [opens.hour]


async def test_a_closed_send_window_replaces_the_eta_and_the_next_try(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    mailing_id, (hour,) = closed_window_mailing(db)
    admin = await console_client("admin")
    page = (await admin.get(f"/ui/mailings/{mailing_id}")).text
    eta = re.search(r'data-testid="eta">(.*?)</dd>', page, re.S)
    assert eta is not None
    assert "send window closed until" in eta[1] and f"{hour:02d}:00" in eta[1]
    assert "about" not in eta[1]  # no ETA from the last minute's rate
    # Next try: when the window opens (today or tomorrow), not the past not_before.
    rows = re.findall(r"<tr>\s*<td>\d+</td>.*?</tr>", page, re.S)
    pending = [row for row in rows if "s-pending" in row]
    assert len(pending) == 2
    for row in pending:
        assert f" {hour:02d}:00</time>" in row, row
        past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
        assert past not in row


async def test_due_messages_next_try_reads_now_and_the_eta_comes_from_the_rate(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 3, timezone="UTC")
    mailing_id = insert_mailing(db, status="running", text="Сейчас")
    insert_messages(db, mailing_id, clients, status="pending")
    db.execute("UPDATE message SET not_before = now() - interval '1 minute'")
    db.execute(
        "INSERT INTO message_minute (minute, mailing_id, status, count) VALUES"
        " (date_trunc('minute', now()) - interval '1 minute', %s, 'sent', 60)",
        [mailing_id],
    )
    admin = await console_client("admin")
    page = (await admin.get(f"/ui/mailings/{mailing_id}")).text
    eta = re.search(r'data-testid="eta">(.*?)</dd>', page, re.S)
    assert eta is not None and "about 1 min" in eta[1]
    assert page.count("<td>now</td>") == 3


async def test_times_show_in_the_zone_the_browser_remembered(console_client: ConsoleClient) -> None:
    admin = await console_client("admin")
    # console.js writes the cookie with encodeURIComponent, as a browser does.
    admin.cookies.set("ui_tz", "Europe%2FMoscow", domain="console.test", path="/ui")
    page = await admin.get("/ui/audit")
    assert "Times are shown in Europe/Moscow" in page.text
    admin.cookies.set("ui_tz", "Mars%2FOlympus", domain="console.test", path="/ui")
    assert "Times are shown in UTC" in (await admin.get("/ui/audit")).text
