"""py-spy around a process, and a summary of its collapsed stacks.

`py-spy record --nonblocking --format raw --function` writes one line per distinct stack,
`frame;frame;...;leaf count`, each frame `function (path:line)`; idle (waiting) samples are
left out, so the counts are where the CPU went. Non-blocking: the process is never paused
(blocking mode cost the sender about a quarter of its rate here), at the price of some
samples whose stack was read while it changed (counted, but short). speedscope.app and
flamegraph.pl read the same file.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")

# Inclusive groups: a sample counts for a group when any frame of its stack lies there.
GROUPS: dict[str, tuple[str, ...]] = {
    "logging (structlog + stdlib logging)": ("structlog/", "logging/__init__"),
    "HTTP client: httpx": ("httpx/", "httpcore/"),
    "HTTP client: httpx_aiohttp transport": ("httpx_aiohttp/",),
    "HTTP client: aiohttp": ("aiohttp/client", "aiohttp/connector", "aiohttp/http_"),
    "AMQP: aio_pika + aiormq + pamqp": ("aio_pika/", "aiormq/", "pamqp/"),
    "DB: SQLAlchemy": ("sqlalchemy/",),
    "DB: psycopg": ("psycopg/", "psycopg_binary/"),
    "metrics (prometheus_client)": ("prometheus_client/",),
    "JSON (json module)": ("json/",),
    "pydantic": ("pydantic/", "pydantic_core/"),
    "FastAPI + Starlette": ("fastapi/", "starlette/"),
    "asyncio event loop internals (self)": (),  # filled from leaf frames below
}


OUTER_FILES = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
)


def available() -> bool:
    return shutil.which("py-spy") is not None or (Path(sys.executable).parent / "py-spy").exists()


def py_spy_binary() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


class Recorder:
    """`py-spy record` attached to a pid until `stop()` (SIGINT makes it write its file)."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.out = out
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    py_spy_binary(),
                    "record",
                    "--pid",
                    str(pid),
                    "--nonblocking",
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--function",
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> Path | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        return self.out if self.out.exists() and self.out.stat().st_size else None

    def cpu_seconds(self) -> float:
        from bench.system import cpu_seconds

        return cpu_seconds(self.process.pid)


def _frame(raw: str) -> tuple[str, str]:
    match = _FRAME.match(raw.strip())
    if match is None:
        return raw.strip(), ""
    return match["func"], match["file"]


def _short_file(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    stacks: list[tuple[list[tuple[str, str]], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = [_frame(f) for f in body.split(";")]
        stacks.append(([(func, _short_file(file)) for func, file in frames], int(count)))
    total = sum(count for _, count in stacks)
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        func, file = frames[-1]
        self_time[f"{func} ({file})"] += count
        for name in {f"{fn} ({fl})" for fn, fl in frames}:
            inclusive[name] += count
        files = [fl for _, fl in frames]
        for group, markers in GROUPS.items():
            if markers and any(any(m in fl for m in markers) for fl in files):
                groups[group] += count
        if file.startswith(("asyncio/", "selectors")):
            groups["asyncio event loop internals (self)"] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    # Inclusive frames worth reading: skip the interpreter's and the event loop's outer frames.
    def outer(name: str) -> bool:
        return name.startswith("<module>") or any(f"({f})" in name for f in OUTER_FILES)

    return {
        "samples": total,
        "self": [(name, pct(n)) for name, n in self_time.most_common(top)],
        "inclusive": [
            (name, pct(n)) for name, n in inclusive.most_common(top + 40) if not outer(name)
        ][:top],
        "groups": sorted(((g, pct(n)) for g, n in groups.items()), key=lambda x: -x[1]),
        "file": os.path.relpath(path),
    }
