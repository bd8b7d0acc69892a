"""JSON logs stay one JSON object per line, library lines included, and never hold secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import configure_logging


@pytest.fixture
def stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stderr", buffer)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", "json")
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def test_library_warnings_and_our_lines_are_json(stderr: io.StringIO) -> None:
    logging.getLogger("aiormq.connection").warning("Connection lost to %s", "broker")
    logging.getLogger("aiormq.connection").info("below the library threshold")
    structlog.get_logger("sender").info("provider accepted message", message_id=1, token="x")
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "Connection lost to broker",
        "provider accepted message",
    ]
    assert lines[0]["logger"] == "aiormq.connection" and lines[0]["level"] == "warning"
    assert lines[1]["token"] == "***"
