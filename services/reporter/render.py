"""The report as an e-mail: a plain-text part and an HTML table with the same numbers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape

from services.reporter.stats import STATUSES, DailyReport

TEXT_PREVIEW = 60


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"


def subject(report: DailyReport) -> str:
    return (
        f"Mailing report for {report.day.isoformat()}: {len(report.mailings)} active "
        f"mailing{'s' if len(report.mailings) != 1 else ''}, {report.sent_in_day} messages sent"
    )


def _by_status(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{status} {counts.get(status, 0)}" for status in STATUSES)


def plain_text(report: DailyReport) -> str:
    lines = [
        f"Mailing statistics for {report.day.isoformat()} (UTC)",
        f"Generated at {_when(report.generated_at)}. Counts by status are totals as of then;",
        "'sent that day' counts messages the provider accepted during the day.",
        "",
    ]
    if not report.mailings:
        lines.append("No mailing was active that day.")
    for m in report.mailings:
        lines += [
            f"Mailing #{m.id} ({m.status}): {_preview(m.text)}",
            f"  start {_when(m.start_at)}, end {_when(m.end_at)}",
            f"  sent that day: {m.sent_in_day}",
            f"  by status: {_by_status(m.counts)}, total {m.total}",
            "",
        ]
    if report.mailings:
        totals = {s: report.total(s) for s in STATUSES}
        lines += [
            f"All {len(report.mailings)} mailings:",
            f"  sent that day: {report.sent_in_day}",
            f"  by status: {_by_status(totals)}, total {sum(totals.values())}",
        ]
    return "\n".join(lines) + "\n"


def html(report: DailyReport) -> str:
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in ("Mailing", "Status", "Text", "Start", "End", "Sent that day", *STATUSES, "Total")
    )
    cell = '<td style="text-align:right">{}</td>'.format
    rows = []
    for m in report.mailings:
        rows.append(
            f'<tr data-mailing-id="{m.id}"><td>#{m.id}</td><td>{escape(m.status)}</td>'
            f"<td>{escape(_preview(m.text))}</td><td>{_when(m.start_at)}</td>"
            f"<td>{_when(m.end_at)}</td>{cell(m.sent_in_day)}"
            + "".join(cell(m.count(s)) for s in STATUSES)
            + f"{cell(m.total)}</tr>"
        )
    if report.mailings:
        rows.append(
            '<tr style="font-weight:bold"><td colspan="5">All mailings</td>'
            f"{cell(report.sent_in_day)}"
            + "".join(cell(report.total(s)) for s in STATUSES)
            + f"{cell(sum(report.total(s) for s in STATUSES))}</tr>"
        )
    body = (
        f'<table border="1" cellpadding="4" cellspacing="0"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        if report.mailings
        else "<p>No mailing was active that day.</p>"
    )
    return (
        "<!DOCTYPE html><html><body>"
        f"<h2>Mailing statistics for {report.day.isoformat()} (UTC)</h2>"
        f"<p>Generated at {_when(report.generated_at)}. Counts by status are totals as of then; "
        "<em>sent that day</em> counts messages the provider accepted during the day.</p>"
        f"{body}</body></html>"
    )


def email(report: DailyReport, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(report)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(plain_text(report))
    message.add_alternative(html(report), subtype="html")
    return message
