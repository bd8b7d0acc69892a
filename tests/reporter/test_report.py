"""The daily report against the real database and a real SMTP server."""

from __future__ import annotations

import asyncio
import re
import smtplib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter import __main__ as cli
from services.reporter.service import Reporter
from services.reporter.settings import ReporterSettings
from shared.db import create_engine
from tests.reporter.conftest import RECIPIENTS, SmtpServer
from tests.support import database

DAY = date(2026, 3, 10)


def at(day_offset: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, second, tzinfo=UTC) + timedelta(
        days=day_offset
    )


# Each mailing: (id, status, started_at, completed_at, deleted_at, messages), a message being
# (status, sent_at, updated_at). Offsets are in days from DAY.
MessageRow = tuple[str, datetime | None, datetime]
MailingRow = tuple[int, str, datetime, datetime | None, datetime | None, list[MessageRow]]

MAILINGS: list[MailingRow] = [
    # Started on the day: in the report. One message sent right after midnight is not "that day".
    (
        1,
        "running",
        at(0, 9),
        None,
        None,
        [
            ("sent", at(0, 0, 0, 0), at(0, 0, 0, 0)),
            ("sent", at(0, 10), at(0, 10)),
            ("sent", at(0, 23, 59, 59), at(0, 23, 59, 59)),
            ("sent", at(1, 0, 0, 0), at(1, 0, 0, 0)),
            ("pending", None, at(0, 9)),
            ("pending", None, at(0, 9)),
            ("failed", None, at(0, 11)),
        ],
    ),
    # Started earlier, messages changed on the day: in the report.
    (
        2,
        "running",
        at(-2),
        None,
        None,
        [
            ("sent", at(-1), at(-1)),
            ("sent", at(-1), at(-1)),
            ("sent", at(0, 8), at(0, 8)),
            ("expired", None, at(0, 20)),
        ],
    ),
    # Completed before the day: not in the report.
    (3, "completed", at(-5), at(-3), None, [("sent", at(-4), at(-4))]),
    # Started earlier, nothing changed on the day (only before and after): not in the report.
    (
        5,
        "running",
        at(-2),
        None,
        None,
        [("sent", at(-1), at(-1)), ("sent", at(1, 3), at(1, 3)), ("retrying", None, at(1, 3))],
    ),
    # Deleted on the day, its open messages cancelled: in the report.
    (
        6,
        "cancelled",
        at(-1),
        None,
        at(0, 10),
        [("sent", at(-1), at(-1)), ("cancelled", None, at(0, 10)), ("cancelled", None, at(0, 10))],
    ),
    # Completed on the day: in the report (its last messages changed that day).
    (7, "completed", at(-3), at(0, 4), None, [("sent", at(0, 3), at(0, 3))]),
]


def seed(db_name: str) -> None:
    with database.connect(db_name) as conn:
        conn.execute(
            "INSERT INTO client (phone, operator_code, tag, timezone) "
            "SELECT '7900' || lpad(i::text, 7, '0'), '900', 'vip', 'Europe/Moscow' "
            "FROM generate_series(1, 20) AS i"
        )
        for mailing_id, status, started_at, completed_at, deleted_at, messages in MAILINGS:
            conn.execute(
                "INSERT INTO mailing (id, start_at, end_at, text, status, started_at, "
                "completed_at, deleted_at, fanout_done_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    mailing_id,
                    started_at,
                    started_at + timedelta(days=5),
                    f"Text of mailing {mailing_id} <b>&",
                    status,
                    started_at,
                    completed_at,
                    deleted_at,
                    started_at,
                ],
            )
            for client_id, (msg_status, sent_at, updated_at) in enumerate(messages, start=1):
                conn.execute(
                    "INSERT INTO message (mailing_id, client_id, status, sent_at, updated_at, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [mailing_id, client_id, msg_status, sent_at, updated_at, started_at],
                )
        # Test sends on the day, of mailing 1 (in the report) and 5 (not): counted nowhere.
        for mailing_id in (1, 5):
            conn.execute(
                "INSERT INTO message (mailing_id, is_test, phone, status, sent_at, updated_at)"
                " VALUES (%s, true, '79990001122', 'sent', %s, %s)",
                [mailing_id, at(0, 12), at(0, 12)],
            )
        # Scheduled for after the day: never in its report.
        conn.execute(
            "INSERT INTO mailing (id, start_at, end_at, text) VALUES (4, %s, %s, 'later')",
            [at(1), at(2)],
        )
        # Explicit ids above: move the identity past them for whatever inserts next.
        conn.execute("SELECT setval(pg_get_serial_sequence('mailing', 'id'), 100)")


@pytest.fixture
async def engine(reporter_settings: ReporterSettings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(reporter_settings, pool_size=1)
    yield engine
    await engine.dispose()


def blocks(body: str) -> dict[int, dict[str, int]]:
    """Per mailing in the plain-text part: 'sent that day' and every status count."""
    found: dict[int, dict[str, int]] = {}
    for match in re.finditer(
        r"^Mailing #(\d+) .*\n.*\n  sent that day: (\d+)\n  by status: (.*), total (\d+)$",
        body,
        re.MULTILINE,
    ):
        numbers = {"sent_in_day": int(match[2]), "total": int(match[4])}
        for part in match[3].split(", "):
            status, count = part.split(" ")
            numbers[status] = int(count)
        found[int(match[1])] = numbers
    return found


async def test_report_mails_the_days_numbers_per_mailing(
    clean_db: str, smtp_server: SmtpServer, reporter_settings: ReporterSettings, engine: AsyncEngine
) -> None:
    seed(clean_db)
    report = await Reporter(reporter_settings, engine).send_report(DAY)

    assert [m.id for m in report.mailings] == [1, 2, 6, 7]
    [received] = smtp_server.inbox.messages
    assert received.mail_from == "reports@mailing.test"
    assert received.rcpt_tos == RECIPIENTS
    message = received.message
    assert message["Subject"] == (
        "Mailing report for 2026-03-10: 4 active mailings, 5 messages sent"
    )
    assert message["To"] == ", ".join(RECIPIENTS)

    text_part = message.get_body(("plain",))
    assert text_part is not None
    plain = text_part.get_content().replace("\r\n", "\n")
    numbers = blocks(plain)
    assert sorted(numbers) == [1, 2, 6, 7]
    assert numbers[1] == {
        "sent_in_day": 3,
        "total": 7,
        "pending": 2,
        "queued": 0,
        "sending": 0,
        "sent": 4,
        "retrying": 0,
        "failed": 1,
        "expired": 0,
        "cancelled": 0,
        "delivered": 0,
        "undelivered": 0,
    }
    assert numbers[2]["sent_in_day"] == 1
    assert (numbers[2]["sent"], numbers[2]["expired"], numbers[2]["total"]) == (3, 1, 4)
    assert numbers[6]["sent_in_day"] == 0
    assert (numbers[6]["sent"], numbers[6]["cancelled"]) == (1, 2)
    assert numbers[7]["sent_in_day"] == 1
    assert "All 4 mailings:\n  sent that day: 5\n" in plain

    html_part = message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert '<tr data-mailing-id="1"><td>#1</td><td>running</td>' in html
    # Mailing texts are escaped, never markup.
    assert "Text of mailing 1 &lt;b&gt;&amp;" in html and "<b>&" not in html
    for mailing_id in (3, 4, 5):
        assert f'data-mailing-id="{mailing_id}"' not in html


async def test_quiet_day_still_sends_a_report(
    clean_db: str, smtp_server: SmtpServer, reporter_settings: ReporterSettings, engine: AsyncEngine
) -> None:
    seed(clean_db)
    await Reporter(reporter_settings, engine).send_report(DAY - timedelta(days=30))

    [received] = smtp_server.inbox.messages
    assert received.message["Subject"] == (
        "Mailing report for 2026-02-08: 0 active mailings, 0 messages sent"
    )
    body = received.message.get_body(("plain",))
    assert body is not None and "No mailing was active that day." in body.get_content()


class FakeClock:
    """Starts at `now`; sleeping moves it forward at once and records how long."""

    def __init__(self, now: datetime) -> None:
        self.current = now
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.current += timedelta(seconds=seconds)


async def test_loop_sleeps_until_report_at_and_reports_the_day_before(
    clean_db: str, smtp_server: SmtpServer, reporter_settings: ReporterSettings, engine: AsyncEngine
) -> None:
    seed(clean_db)
    clock = FakeClock(at(0, 22, 30))
    reporter = Reporter(reporter_settings, engine, clock)

    await reporter.run(max_runs=1)

    # 22:30 -> 06:00 the next morning, in steps of at most a minute.
    assert clock.current == at(1, 6, 0)
    assert sum(clock.sleeps) == pytest.approx(7.5 * 3600)
    assert max(clock.sleeps) <= 60
    [received] = smtp_server.inbox.messages
    assert received.message["Subject"].startswith("Mailing report for 2026-03-10:")


async def test_loop_retries_a_failed_delivery(
    clean_db: str, smtp_server: SmtpServer, reporter_settings: ReporterSettings, engine: AsyncEngine
) -> None:
    clock = FakeClock(at(1, 5, 59, 30))
    unreachable = reporter_settings.model_copy(update={"smtp_port": 1})
    reporter = Reporter(unreachable, engine, clock)

    async def heal(seconds: float) -> None:
        # The SMTP server "comes back" during the first retry pause.
        if seconds == reporter_settings.report_retry_s:
            reporter.settings = reporter_settings
        await FakeClock.sleep(clock, seconds)

    clock.sleep = heal  # type: ignore[method-assign]
    await reporter.run(max_runs=1)

    # The first attempt failed at 06:00; the second went out one retry pause later.
    assert clock.sleeps[-1] == reporter_settings.report_retry_s
    assert clock.current == at(1, 6) + timedelta(seconds=reporter_settings.report_retry_s)
    [received] = smtp_server.inbox.messages
    assert received.message["Subject"].startswith("Mailing report for 2026-03-10:")


def test_once_cli_exits_non_zero_when_smtp_is_down(
    clean_db: str, reporter_settings: ReporterSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", reporter_settings.database_url)
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", "1")
    monkeypatch.setenv("REPORT_RECIPIENTS", "ops@example.com")
    monkeypatch.setenv("LOG_FORMAT", "console")
    assert asyncio.run(cli.main(["--once", "--date", "2026-03-10"])) == 1


async def test_once_cli_sends_the_given_day(
    clean_db: str,
    smtp_server: SmtpServer,
    reporter_settings: ReporterSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(clean_db)
    monkeypatch.setenv("DATABASE_URL", reporter_settings.database_url)
    monkeypatch.setenv("SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("REPORT_RECIPIENTS", " a@example.com , b@example.com ")
    monkeypatch.setenv("LOG_FORMAT", "console")

    assert await cli.main(["--once", "--date", "2026-03-10"]) == 0

    [received] = smtp_server.inbox.messages
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]
    assert received.message["Subject"].startswith("Mailing report for 2026-03-10: 4 active")


def test_date_requires_once() -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--date", "2026-03-10"])


def test_settings_parse_the_environment_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORT_AT", "06:30")
    monkeypatch.setenv("REPORT_RECIPIENTS", "x@example.com,y@example.com")
    monkeypatch.setenv("SMTP_TLS", "starttls")
    monkeypatch.setenv("SMTP_PASSWORD", "secret")
    settings = ReporterSettings()
    assert settings.report_at.isoformat() == "06:30:00"
    assert settings.report_recipients == ["x@example.com", "y@example.com"]
    assert settings.smtp_tls == "starttls"
    assert settings.smtp_password is not None and "secret" not in repr(settings)
    assert settings.metrics_port == 9103
    monkeypatch.setenv("SMTP_TLS", "ssl")
    with pytest.raises(ValueError):
        ReporterSettings()


def test_smtp_refusal_is_an_error(reporter_settings: ReporterSettings) -> None:
    # Nothing listens on port 1: the blocking sender raises instead of losing the report quietly.
    from services.reporter import mailer, render
    from services.reporter.stats import DailyReport

    message = render.email(DailyReport(DAY, at(1, 6), []), "a@example.com", ["b@example.com"])
    with pytest.raises((OSError, smtplib.SMTPException)):
        mailer.send_blocking(reporter_settings.model_copy(update={"smtp_port": 1}), message)
