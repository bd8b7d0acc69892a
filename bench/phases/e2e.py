"""Phase `e2e`: one mailing to every seeded client through the real processes, stub at 0 and
50 ms (the second one profiled), the ceilings of the same sends straight to the stub, the
settings sweep (one knob at a time), and a short mailing on freshly started processes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench import profile
from bench.context import SCHEDULER_KNOBS, Bench, log
from bench.format import PROCESS_NAMES, PROCESSES, Report, fmt, ratio, table
from bench.result import PhaseResult


@dataclass
class E2ESpec:
    label: str
    latency_ms: float
    log_level: str = "WARNING"
    senders: int = 1
    profile: bool = False
    defaults: bool = False  # the shipped defaults whatever --sender-env/--scheduler-env say
    sender_env: dict[str, str] = field(default_factory=dict)
    scheduler_env: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class E2EResult(PhaseResult):
    """Stored under four keys: `e2e` (the runs), `ceilings`, `sweep` and `short`."""

    key = "e2e"
    clients: int
    seed_s: float
    runs: dict[str, dict[str, Any]]
    ceilings: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    short: dict[str, Any] | None = None

    def figures(self) -> dict[str, Any]:
        body = self.body()
        out = {"e2e": body, "ceilings": body.pop("ceilings")}
        out |= {key: body.pop(key) for key in ("sweep", "short") if key in body}
        return out

    @classmethod
    def from_figures(cls, results: dict[str, Any]) -> E2EResult | None:
        if not results.get("e2e"):
            return None
        body = dict(results["e2e"]) | {"ceilings": results.get("ceilings", {})}
        body |= {key: results[key] for key in ("sweep", "short") if results.get(key)}
        return cls.from_body(body)

    def render(self, report: Report) -> None:
        self.render_runs(report)
        self.render_ceilings(report)
        self.render_sweep(report)
        self.render_short(report)

    def render_runs(self, report: Report) -> None:
        rows = [
            [
                f"`{label}`",
                f"{run['latency_ms']:g} ms",
                run["log_level"],
                run["settings"],
                f"**{fmt(run['rate'])}**",
                fmt(run["steady_rate"]),
                fmt(run["seconds"]),
                fmt(run["first_delivery_s"], 2),
                f"{fmt(run['sent'])} / {fmt(run['expected'])}",
                fmt((run.get("machine_busy") or 0) * 100, 0) + "%",
                " / ".join(map(str, run.get("load", []))),
            ]
            for label, run in self.runs.items()
        ]
        report.add(
            f"## End-to-end throughput ({fmt(self.clients)} clients, one mailing)\n\n"
            f"{fmt(self.clients)} matching clients bulk-seeded with SQL; one mailing that "
            "starts now is created through the API. msg/s counts from the create request "
            "until every message is `sent` (polled from the counters every 50 ms); steady "
            "is the rate between 10% and 90% sent. busy is the CPU time of all processes "
            "over wall time x cores. load is the 1-min load average before / after.\n\n"
            + table(
                "run | stub | log level | settings | msg/s | steady msg/s | seconds | "
                "first delivery s | sent | busy | load",
                rows,
            )
        )
        runs = self.runs.values()
        rows = [
            [PROCESS_NAMES[proc]] + [fmt(run["cpu_ms_per_msg"].get(proc), 3) for run in runs]
            for proc in [*PROCESSES[:-1], "postgres_server", "stub"]
        ]
        rows.append(
            ["**sum (without stub, DB backends only)**"]
            + [fmt(report.cpu_total_ms(run), 3) for run in runs]
        )
        report.add(
            "CPU per delivered message, by process (`/proc/<pid>/stat` utime+stime over the "
            'run). "this database\'s backends" sums the PostgreSQL backends connected to the '
            'bench database; "whole server tree" is the postmaster and all its children '
            "(including WAL writer, checkpointer, autovacuum — and any other engineer's load "
            "at the time).\n\n"
            + table(["CPU ms per delivered message"] + [f"`{label}`" for label in self.runs], rows)
        )

    def render_ceilings(self, report: Report) -> None:
        rows = []
        for latency in (0, 50):
            run = report.run(f"{latency}ms-warning")
            for client, name in (("aiohttp", "plain aiohttp"), ("provider", "ProviderClient")):
                c = report.ceiling(f"{client}@{latency}ms")
                if run and c:
                    rows.append(
                        [
                            f"{latency} ms",
                            name,
                            fmt(c["requests"]),
                            fmt(c["rate"]),
                            fmt(c["cpu_ms_per_request"], 3),
                            fmt(run["rate"]),
                            ratio(run["rate"], c["rate"]),
                        ]
                    )
        if not rows:
            return
        conc = report.r.get("settings", {}).get("sender", {}).get("MAX_CONNECTIONS") or next(
            (c.get("concurrency") for c in self.ceilings.values()), None
        )
        report.add(
            "### Ceilings (same run, same stub, same sends)\n\n"
            f"The same number of sends pushed straight to the stub from one process at the "
            f"sender's concurrency ({conc} = MAX_CONNECTIONS): plain aiohttp, and the "
            "sender's own `ProviderClient` (libcurl's multi interface, plus its request "
            "building and `classify()`). The last column is the end-to-end rate "
            "(`0ms-warning` / `50ms-warning`) over the ceiling.\n\n"
            + table(
                "stub | client | sends | sends/s | client CPU ms/send | end-to-end msg/s | "
                "end-to-end / ceiling",
                rows,
            )
        )

    def render_sweep(self, report: Report) -> None:
        sw = self.sweep
        if sw and sw.get("skipped"):
            report.add(f"### Settings sweep\n\nSkipped in this run: {sw['skipped']}.")
            return
        if not sw or not sw.get("runs"):
            return
        base = sw["runs"].get("base")
        rows = []
        for label, run in sw["runs"].items():
            per = run["cpu_ms_per_msg"]
            name = {
                "base": "the run's settings (as above, WARNING)",
                "defaults": "all shipped defaults (WARNING)",
            }.get(label, f"`{label}`")
            rows.append(
                [
                    name,
                    f"**{fmt(run['rate'])}**",
                    fmt(run["steady_rate"]),
                    ratio(run["rate"], base["rate"] if base else None),
                    *(
                        fmt(per.get(p), 3)
                        for p in ("sender", "scheduler", "postgres_db", "rabbitmq")
                    ),
                    " / ".join(map(str, run.get("load", [])[:1])),
                ]
            )
        report.add(
            f"### Settings sweep ({fmt(sw['messages'])} messages per run, stub at 0 ms, "
            "LOG_LEVEL=WARNING)\n\n"
            "One change at a time from the run's settings (the shipped defaults unless "
            "`--sender-env`/`--scheduler-env` said otherwise; the second row is the set the "
            "runs used before they moved to the shipped defaults); the ratio is to the first run "
            "of this sweep (same size). Runs this short are noisy on a shared machine: read "
            "differences under about 10% as no difference.\n\n"
            + table(
                "settings (one change from the run's) | msg/s | steady msg/s | vs first | "
                "sender CPU ms/msg | scheduler | PostgreSQL | RabbitMQ | 1-min load",
                rows,
            )
            + "\n\n"
            + self.logging_cost()
        )

    def logging_cost(self) -> str:
        runs = (self.sweep or {}).get("runs", {})
        info, warn = runs.get("LOG_LEVEL=INFO"), runs.get("base")
        if not info or not warn:
            return ""
        delta = {
            p: (info["cpu_ms_per_msg"].get(p) or 0) - (warn["cpu_ms_per_msg"].get(p) or 0)
            for p in ("sender", "scheduler")
        }
        return (
            f"Per-message INFO logs: at `LOG_LEVEL=INFO` the pipeline reaches "
            f"{ratio(info['rate'], warn['rate'])}x the rate at `WARNING` "
            f"({fmt(info['rate'])} vs {fmt(warn['rate'])} msg/s); they cost "
            f"{delta['sender']:.3f} ms of sender CPU and {delta['scheduler']:.3f} ms of "
            'scheduler CPU per message (the sender logs "provider accepted message", the '
            'scheduler "message queued": one JSON line each per message).'
        )

    def render_short(self, report: Report) -> None:
        sh = self.short
        if not sh or not sh.get("runs"):
            return
        rows = [
            [
                str(i + 1),
                fmt(run["seconds"], 2),
                fmt(run["first_delivery_s"], 2),
                fmt(run["rate"]),
                f"{fmt(run['sent'])} / {fmt(run['expected'])}",
                " / ".join(map(str, run.get("load", [])[:1])),
            ]
            for i, run in enumerate(sh["runs"])
        ]
        report.add(
            f"### A short mailing ({fmt(sh['clients'])} clients, stub at "
            f"{sh['latency_ms']:g} ms, shipped defaults)\n\n"
            "Each run on a freshly started system (new scheduler and sender processes, their "
            "connections not yet open), timed from the create request until every message is "
            f"terminal. Median **{fmt(sh.get('median_s'), 2)} s**.\n\n"
            + table("run | seconds | first delivery s | msg/s | sent | 1-min load", rows)
        )

    def render_appendix(self, report: Report) -> None:
        run = report.run("50ms-warning")
        if not run or not run.get("profiles"):
            return
        text = (
            "## Profile (py-spy, during the `50ms-warning` run)\n\n"
            "`py-spy record --nonblocking --rate 100 --format raw --function` on the sender "
            f"and the scheduler during the {fmt(self.clients)}-client run with the "
            "stub at 50 ms (the sender is CPU-bound there too; the 0 ms headline run is left "
            f"undisturbed). That run reached {fmt(run['rate'])} msg/s while profiled; the two "
            f"py-spy processes used {fmt(run.get('profiler_cpu_s'))} s of CPU. Percentages are "
            "of the process's on-CPU samples (non-blocking sampling reads a few stacks "
            "mid-change: those count, but short). The collapsed stacks are in "
            "`build/bench/<run id>/profile-*.txt` (speedscope.app opens them).\n"
        )
        for name, summary in run["profiles"].items():
            text += f"\n### {name} ({fmt(summary['samples'])} samples)\n\n"
            text += report.profile_tables(summary)
        report.add(text)


async def run(bench: Bench) -> E2EResult:
    messages = bench.args.clients
    await bench.reset_messages(clients=True)
    seed_s = await bench.seed_clients(messages)
    out = bench.keep(E2EResult(clients=messages, seed_s=round(seed_s, 2), runs={}))
    # py-spy samples the 50 ms run (non-blocking: the sampled processes never pause; py-spy's
    # own CPU is reported), so the 0 ms headline run is measured undisturbed.
    profiled = not bench.args.no_profile and profile.available()
    specs = [E2ESpec("0ms-warning", 0.0), E2ESpec("50ms-warning", 50.0, profile=profiled)]
    if bench.args.e2e_runs:
        specs = [spec for spec in specs if spec.label in bench.args.e2e_runs.split(",")]
    for spec in specs:
        run = out.runs[spec.label] = await e2e_run(bench, spec, messages)
        log(
            f"  e2e {spec.label}: {run['rate']}/s (steady {run['steady_rate']}/s) "
            f"in {run['seconds']}s, sent {run['sent']}/{messages}"
        )
        if not bench.args.no_ceilings:
            # Right after the run, on the same stub, at the sender's concurrency.
            await ceilings(bench, out, spec.latency_ms, messages)
    if bench.args.sweep:
        await sweep_within_budget(bench, out)
    if bench.args.short_runs:
        await short(bench, out)
    return out


async def e2e_run(bench: Bench, spec: E2ESpec, messages: int) -> dict[str, Any]:
    assert bench.stub_ctl is not None
    await bench.reset_messages()
    await bench.stub_ctl.reset(spec.latency_ms)
    sender_env = {} if spec.defaults else bench.sender_env | spec.sender_env
    scheduler_env = {} if spec.defaults else bench.scheduler_env | spec.scheduler_env
    dep = await bench.deploy(
        bench.deployment(
            f"e2e-{spec.label}",
            log_level=spec.log_level,
            sender_env=sender_env,
            scheduler_env=scheduler_env,
            senders=spec.senders,
        )
    )
    recorders: list[profile.Recorder] = []
    try:
        if spec.profile:
            assert dep.scheduler is not None
            targets = {"sender": dep.sender_services[0].pid, "scheduler": dep.scheduler.pid}
            recorders = [
                profile.Recorder(pid, bench.run_dir / f"profile-{name}.txt")
                for name, pid in targets.items()
            ]
            await asyncio.sleep(1.0)  # py-spy attaches
        timeout = max(120.0, messages / 100)
        result = await bench.run_to_completion(dep, messages, timeout=timeout, recorders=recorders)
    finally:
        profiles = {}
        for name, rec in zip(("sender", "scheduler"), recorders, strict=False):
            path = rec.stop()
            if path is not None:
                profiles[name] = profile.summarize(path)
        await bench.undeploy(dep)
    env = sender_env | scheduler_env
    result |= {
        "label": spec.label,
        "latency_ms": spec.latency_ms,
        "log_level": spec.log_level,
        "senders": spec.senders,
        "settings": " ".join(f"{k}={v}" for k, v in env.items()) or "shipped defaults",
        "code": "this",
        "sender_env": sender_env,
        "scheduler_env": scheduler_env,
    }
    if profiles:
        result["profiles"] = profiles
    return result


async def sweep_within_budget(bench: Bench, result: E2EResult) -> None:
    """The sweep is the part of `make bench` that gives way: skipped when the run would
    otherwise overshoot its time budget (a loaded machine sends slowly)."""
    variants = 1 + len([v for v in bench.args.sweep.split(";") if v])
    # At the pace of the last run (a guess when the sweep runs alone).
    rate = max(list(result.runs.values())[-1]["rate"] if result.runs else 1_000.0, 1.0)
    sweep_s = variants * (min(bench.args.sweep_messages, bench.args.clients) / rate + 12)
    elapsed = time.monotonic() - bench.started
    rest_s = 300.0 if bench.args.fanout_clients >= 500_000 else 60.0
    if elapsed + sweep_s + rest_s <= bench.args.budget_s:
        await sweep(bench, result)
        return
    result.sweep = {
        "skipped": f"after {elapsed:.0f} s the sweep (≈{sweep_s:.0f} s at "
        f"{rate:.0f} msg/s) would take the run past its {bench.args.budget_s:.0f} s "
        "budget (--budget-s)"
    }
    log(f"  sweep skipped: {result.sweep['skipped']}")


async def sweep(bench: Bench, result: E2EResult) -> None:
    """One change at a time from the run's settings, at a smaller size, stub at 0 ms."""
    messages = min(bench.args.sweep_messages, bench.args.clients)
    await bench.reset_messages(clients=True)
    await bench.seed_clients(messages)
    out: dict[str, Any] = {"messages": messages, "runs": {}}
    result.sweep = out
    for label in ["base", *filter(None, bench.args.sweep.split(";"))]:
        spec = E2ESpec(f"sweep-{len(out['runs'])}", 0.0, defaults=label == "defaults")
        for pair in label.split(",") if label not in ("base", "defaults") else []:
            key, _, value = pair.partition("=")
            key, value = key.strip().upper(), value.strip()
            if key == "LOG_LEVEL":
                spec.log_level = value.upper()
            else:
                (spec.scheduler_env if key in SCHEDULER_KNOBS else spec.sender_env)[key] = value
        run = out["runs"][label] = await e2e_run(bench, spec, messages)
        run["variant"] = label
        log(f"  sweep {label}: {run['rate']}/s (steady {run['steady_rate']}/s)")


async def short(bench: Bench, result: E2EResult) -> None:
    """A short mailing at full speed: `--short-clients` clients, stub at 20 ms, the shipped
    defaults, each run on freshly started processes (the lease cap and the connection limit
    start from scratch)."""
    clients = min(bench.args.short_clients, bench.args.clients)
    await bench.reset_messages(clients=True)
    await bench.seed_clients(clients)
    runs: list[dict[str, Any]] = []
    result.short = {"clients": clients, "latency_ms": 20.0, "runs": runs}
    for i in range(bench.args.short_runs):
        spec = E2ESpec(f"short-{i}", 20.0, defaults=True)
        runs.append(await e2e_run(bench, spec, clients))
        log(f"  short mailing {spec.label}: {runs[-1]['seconds']} s ({runs[-1]['rate']}/s)")
    result.short["median_s"] = sorted(run["seconds"] for run in runs)[len(runs) // 2]


async def ceilings(bench: Bench, result: E2EResult, latency_ms: float, count: int) -> None:
    """The same number of sends straight to the same stub at the sender's concurrency."""
    assert bench.stub_ctl is not None
    for client in ("aiohttp", "provider"):
        await bench.stub_ctl.reset(latency_ms)
        ceiling = await bench.httpload(client, bench.max_connections, count=count, first_id=1)
        result.ceilings[f"{client}@{latency_ms:g}ms"] = ceiling
        log(f"  ceiling {client} at {latency_ms:g} ms: {ceiling['rate']}/s")
