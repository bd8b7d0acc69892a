"""Issue 19 in the console: the Providers page (state, rate against max_tps, delivery rate per
operator code) and a mailing's receipts and replies, in English and Russian."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from shared.provider_state import ProviderReport, report_provider_states
from shared.replies import Reply, record_replies
from tests.api.helpers import insert_clients, insert_mailing, insert_messages
from tests.ui.pages_fixtures import ConsoleClient, console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]


@pytest.fixture
def db(clean_db: str) -> Iterator[psycopg.Connection]:
    from tests.support import database

    with database.connect(clean_db) as conn:
        yield conn


def seed(db: psycopg.Connection) -> tuple[int, list[str]]:
    """A mailing through `default` (the provider without PROVIDERS_FILE): code 905 with 3
    delivered, 1 undelivered, 1 awaiting; code 912 with 1 delivered."""
    mailing = insert_mailing(db, status="running")
    clients = insert_clients(db, 5, operator_code="905") + insert_clients(db, 1, first=50)
    ids = insert_messages(db, mailing, clients)
    final = ["delivered", "delivered", "delivered", "undelivered", "sent", "delivered"]
    for message_id, status in zip(ids, final, strict=True):
        db.execute(
            "UPDATE message SET status = %s, provider = 'default', provider_message_id = id::text,"
            " sent_at = now() WHERE id = %s",
            (status, message_id),
        )
    phones = [r[0] for r in db.execute("SELECT phone FROM client ORDER BY id").fetchall()]
    return mailing, phones


async def test_the_providers_page_shows_state_rate_and_delivery(
    console_client: ConsoleClient, console_app: object, db: psycopg.Connection
) -> None:
    seed(db)
    async with console_app.state.session_factory() as session:  # type: ignore[attr-defined]
        await report_provider_states(
            session, "sender-a:1", [ProviderReport("default", "fabrique", True, rate=12.5)]
        )
    viewer = await console_client("viewer")
    page = await viewer.get("/ui/providers", headers={"Accept-Language": "en"})
    assert page.status_code == 200, page.text
    text = page.text
    assert 'data-provider="default"' in text
    assert ">up<" in text
    assert "12.5 messages/s" in text
    assert 'data-testid="rate-default">80.0%<' in text  # 4 of 5 receipts over all codes
    assert "<td>905</td>" in text and "75.0%" in text and "<td>912</td>" in text
    russian = await viewer.get("/ui/providers", headers={"Accept-Language": "ru"})
    assert "Провайдеры" in russian.text and "работает" in russian.text
    assert "Доля доставленных" in russian.text
    live = await viewer.get("/ui/providers/live", headers={"HX-Request": "true"})
    assert live.status_code == 200 and 'id="providers-live"' in live.text


async def test_a_provider_nobody_reports_is_unknown(
    console_client: ConsoleClient, db: psycopg.Connection
) -> None:
    viewer = await console_client("viewer")
    page = await viewer.get("/ui/providers", headers={"Accept-Language": "en"})
    assert ">unknown<" in page.text
    assert "No messages went through a provider in the last hour." in page.text


async def test_the_mailing_page_shows_receipts_and_replies(
    console_client: ConsoleClient, console_app: object, db: psycopg.Connection
) -> None:
    mailing, phones = seed(db)
    async with console_app.state.session_factory() as session:  # type: ignore[attr-defined]
        await record_replies(
            session, [Reply("default", phones[0], "Спасибо"), Reply("default", phones[1], "STOP")],
            ["STOP"],
        )  # fmt: skip
    admin = await console_client("admin")
    page = await admin.get(f"/ui/mailings/{mailing}", headers={"Accept-Language": "en"})
    assert page.status_code == 200, page.text
    text = page.text
    assert 'data-testid="delivered">4<' in text
    assert 'data-testid="undelivered">1<' in text
    assert 'data-testid="delivery-routes"' in text
    assert "Спасибо" in text and "stop word: opted out" in text
    russian = await admin.get(f"/ui/mailings/{mailing}", headers={"Accept-Language": "ru"})
    assert "Ждут отчёта" in russian.text and "Ответы" in russian.text
    assert "стоп-слово: отписан" in russian.text
