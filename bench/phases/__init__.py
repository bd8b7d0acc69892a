"""The benchmark phases, one module each, in the order `make bench` runs them: each is
`async def run(bench) -> <Name>Result` (bench/context.py's Bench), and its result renders its
own report sections (bench/report.py puts them in order)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.context import Bench
from bench.phases import api, broker, e2e, fanout, http, imports, scaleout, stats, tracing
from bench.phases.result import PhaseResult

Phase = Callable[[Bench], Awaitable[PhaseResult]]

PHASES: dict[str, Phase] = {
    "http": http.run,
    "broker": broker.run,
    "e2e": e2e.run,
    "scaleout": scaleout.run,
    "api": api.run,
    "fanout": fanout.run,
    "import": imports.run,
    "stats": stats.run,
    "tracing": tracing.run,
}
