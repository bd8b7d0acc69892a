"""Prometheus metrics of the reporter (served on METRICS_PORT in loop mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REPORTS_SENT = Counter("mailing_reports_sent_total", "Daily reports delivered to the SMTP server")
REPORT_FAILURES = Counter(
    "mailing_report_failures_total", "Attempts to build or deliver a daily report that failed"
)
LAST_REPORT = Gauge(
    "mailing_report_last_success_timestamp_seconds", "When the last daily report was delivered"
)
