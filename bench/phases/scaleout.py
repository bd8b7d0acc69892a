"""Phase `scaleout`: one sender, then two, against the stub at 200 ms with a fixed number of
connections each: the speed-up of a second sender."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.context import Bench, log
from bench.format import Report, fmt, table
from bench.result import PhaseResult


@dataclass(kw_only=True)
class ScaleoutResult(PhaseResult):
    key = "scaleout"
    messages: int
    latency_ms: int
    max_connections: int
    runs: dict[str, dict[str, Any]]
    speedup: float | None = None
    speedup_end_to_end: float | None = None

    def render(self, report: Report) -> None:
        so = self.body()
        rows = []
        for n, run in so["runs"].items():
            rows.append(
                [
                    n,
                    fmt(run["steady_rate"]),
                    fmt(run["rate"]),
                    fmt(run["seconds"]),
                    fmt(run["cpu_ms_per_msg"].get("sender"), 3),
                    fmt((run.get("machine_busy") or 0) * 100, 0) + "%",
                ]
            )
        report.add(
            f"## Scale-out (stub at {so['latency_ms']} ms, {so['max_connections']} connections "
            f"per sender, {fmt(so['messages'])} messages)\n\n"
            + table(
                ("senders | steady msg/s | msg/s end to end | seconds | sender CPU ms/msg | busy"),
                rows,
            )
            + f"\n\nSpeed-up, two senders over one: **{fmt(so.get('speedup'), 2)}x** steady "
            f"({fmt(so.get('speedup_end_to_end'), 2)}x end to end, which includes the start-up "
            "and tail of a short run)."
        )


async def run(bench: Bench) -> ScaleoutResult:
    assert bench.stub_ctl is not None
    messages = bench.args.scaleout_messages
    conns = bench.args.scaleout_connections
    await bench.reset_messages(clients=True)
    await bench.seed_clients(messages)
    out = bench.keep(
        ScaleoutResult(messages=messages, latency_ms=200, max_connections=conns, runs={})
    )
    # One deployment; the second sender joins for the second run (same scheduler, api).
    dep = await bench.deploy(
        bench.deployment("scaleout", sender_env=bench.sender_env | {"MAX_CONNECTIONS": str(conns)})
    )
    try:
        for senders in (1, 2):
            if senders == 2:
                await dep.add_sender()
            await bench.reset_messages()
            await bench.purge_send_queue(dep)
            await bench.stub_ctl.reset(200.0)
            run = await bench.run_to_completion(dep, messages, timeout=max(120.0, messages / 50))
            out.runs[str(senders)] = run
            log(f"  scale-out {senders} sender(s): steady {run['steady_rate']}/s ({run['rate']}/s)")
    finally:
        await bench.undeploy(dep)
    one, two = out.runs["1"], out.runs["2"]
    if one["steady_rate"] and two["steady_rate"]:
        out.speedup = round(two["steady_rate"] / one["steady_rate"], 2)
    if one["rate"] and two["rate"]:
        out.speedup_end_to_end = round(two["rate"] / one["rate"], 2)
    return out
