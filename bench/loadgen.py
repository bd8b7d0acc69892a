"""What the closed-loop load generators (bench/httpload.py, bench/apiload.py) share: N workers,
each one request at a time, until a number of requests or of seconds; one JSON line out."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def closed_loop(
    one: Callable[[], Awaitable[None]], concurrency: int, count: int | None, seconds: float | None
) -> tuple[int, float]:
    """`one()` from `concurrency` workers until `count` started or `seconds` passed: the
    requests started and the seconds it took."""
    started = time.perf_counter()
    stop_at = None if seconds is None else started + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while (count is None or done < count) and (
            stop_at is None or time.perf_counter() < stop_at
        ):
            done += 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


def parser(description: str, concurrency: int) -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--concurrency", type=int, default=concurrency)
    out.add_argument("--count", type=int)
    out.add_argument("--seconds", type=float)
    return out


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if (args.count is None) == (args.seconds is None):
        parser.error("give exactly one of --count and --seconds")
    return args


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
