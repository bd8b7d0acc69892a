"""A real SMTP server (aiosmtpd) on a free loopback port, recording what it receives."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.reporter.settings import ReporterSettings
from tests.support.rig.processes import free_port

RECIPIENTS = ["ops@example.com", "lead@example.org"]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Inbox:
    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: Inbox


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, inbox)
    finally:
        controller.stop()


@pytest.fixture
def reporter_settings(smtp_server: SmtpServer, database_url: str) -> ReporterSettings:
    return ReporterSettings(
        database_url=database_url,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_timeout_s=5,
        report_from="reports@mailing.test",
        report_recipients=RECIPIENTS,
        report_retry_s=90,
        report_max_attempts=3,
        db_pool_size=1,
    )
