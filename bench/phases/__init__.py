"""The benchmark phases, one module each: `async def run(bench) -> <Name>Result` on the shared
Bench (bench/context.py), whose result stores its figures and renders its report sections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.context import Bench
from bench.phases import api, broker, e2e, fanout, http, imports, scaleout, stats, tracing
from bench.result import PhaseResult


@dataclass(frozen=True)
class Phase:
    run: Callable[[Bench], Awaitable[PhaseResult]]
    result: type[PhaseResult]


# In the order `make bench` runs them.
PHASES: dict[str, Phase] = {
    "http": Phase(http.run, http.HttpResult),
    "broker": Phase(broker.run, broker.BrokerResult),
    "e2e": Phase(e2e.run, e2e.E2EResult),
    "scaleout": Phase(scaleout.run, scaleout.ScaleoutResult),
    "api": Phase(api.run, api.ApiResult),
    "fanout": Phase(fanout.run, fanout.FanoutResult),
    "import": Phase(imports.run, imports.ImportResult),
    "stats": Phase(stats.run, stats.StatsResult),
    "tracing": Phase(tracing.run, tracing.TracingResult),
}
# The order of their sections in the report.
REPORT_ORDER = ("e2e", "http", "scaleout", "fanout", "broker", "stats", "api", "import", "tracing")
