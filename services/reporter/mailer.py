"""Delivery over SMTP with the standard library, in a worker thread (smtplib blocks)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from services.reporter.settings import ReporterSettings

Refused = dict[str, tuple[int, bytes]]


def send_blocking(settings: ReporterSettings, message: EmailMessage) -> Refused:
    """Deliver `message`; returns the recipients the server refused (it raises if it refused
    them all, so a retry never resends to someone who already has the report)."""
    timeout = settings.smtp_timeout_s
    smtp: smtplib.SMTP
    if settings.smtp_tls == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.smtp_host,
            settings.smtp_port,
            timeout=timeout,
            context=ssl.create_default_context(),
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    with smtp:
        smtp.ehlo()
        if settings.smtp_tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_username, password)
        refused = smtp.send_message(
            message, from_addr=settings.report_from, to_addrs=settings.report_recipients
        )
    return refused


async def send(settings: ReporterSettings, message: EmailMessage) -> Refused:
    return await asyncio.to_thread(send_blocking, settings, message)
