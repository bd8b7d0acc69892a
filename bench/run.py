"""`make bench`: the pipeline's throughput, fan-out, broker, API and statistics figures on
this machine, written to docs/BENCHMARKS.md.

Real processes against the real servers: a fresh random PostgreSQL database and RabbitMQ
namespaces of its own (both removed at the end), the provider stub as a separate process,
api / scheduler / sender started as `python -m services.<name>` with their settings in the
environment. Every comparison is between figures of this same run.

    python -m bench.run                        # full size (about 10-14 minutes)
    python -m bench.run --smoke                # tiny sizes, well under a minute
    python -m bench.run --phases e2e,fanout    # some phases only
    python -m bench.run --drop-stats-db        # remove the kept statistics database

This module is the command line and the order of the run; each phase is a module of
bench/phases/ with a typed result that renders its own report section, on the shared
Bench of bench/context.py (the rig's processes and data helpers underneath).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import traceback
from pathlib import Path

from bench import stats_db, system
from bench.context import BASELINE_REV, DEFAULT_SWEEP, ROOT, Bench, log
from bench.phases import PHASES


async def run(bench: Bench) -> None:
    if bench.args.wait_quiet:
        await bench.wait_until_quiet()
    started = bench.started = time.monotonic()
    phases = [p for p in bench.args.phases.split(",") if p]
    bench.results["args"] = {k: v for k, v in vars(bench.args).items() if k != "func"}
    bench.results["settings"] = {
        "sender": bench.sender_env,
        "scheduler": bench.scheduler_env,
    }
    try:
        await bench.setup()
        for name in phases:
            log(f"phase {name}")
            phase_started = time.monotonic()
            load = system.load_average()[0]
            try:
                bench.keep(await PHASES[name].run(bench))
            except Exception as exc:
                bench.results["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
                log(f"phase {name} failed: {exc}")
                traceback.print_exc()
            bench.results.setdefault("phase_seconds", {})[name] = {
                "seconds": round(time.monotonic() - phase_started, 1),
                "load_at_start": round(load, 2),
            }
    finally:
        await bench.teardown()
        bench.store_results()
    bench.results["total_seconds"] = round(time.monotonic() - started, 1)
    bench.results["machine"] = bench.results.get("machine", {}) | {
        "load_at_end": [round(x, 2) for x in system.load_average()]
    }
    from bench.report import render

    (bench.run_dir / "results.json").write_text(json.dumps(bench.results, indent=2, default=str))
    report = Path(bench.args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(bench.results))
    log(f"report: {report} (raw figures: {bench.run_dir / 'results.json'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmarks of the mailing pipeline")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it all works")
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--fanout-clients", type=int, default=1_000_000)
    parser.add_argument("--stats-rows", type=int, default=10_000_000)
    parser.add_argument("--fanout-seconds", type=float, default=60.0)
    parser.add_argument("--fanout-timeout", type=float, default=150.0)
    parser.add_argument("--tiny-during-s", type=float, default=5.0)
    parser.add_argument(
        "--step-tail-s", type=float, default=3.0, help="sending watched after the step's fan-out"
    )
    parser.add_argument("--tiny-timeout", type=float, default=90.0)
    parser.add_argument("--scaleout-messages", type=int, default=4_000)
    parser.add_argument("--scaleout-connections", type=int, default=50)
    parser.add_argument("--http-seconds", type=float, default=3.0)
    parser.add_argument("--broker-sequential", type=int, default=2_000)
    parser.add_argument("--broker-gathered", type=int, default=10_000)
    parser.add_argument("--api-seconds", type=float, default=6.0)
    parser.add_argument("--api-concurrency", type=int, default=16)
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--import-mailing-clients", type=int, default=200_000)
    parser.add_argument("--stats-requests", type=int, default=300)
    parser.add_argument("--stats-write-rate", type=float, default=2_000.0, help="rows/s")
    parser.add_argument("--stats-db", help="database name for the statistics phase")
    parser.add_argument(
        "--stats-throwaway", action="store_true", help="seed a temporary stats db, drop it after"
    )
    parser.add_argument("--drop-stats-db", action="store_true", help="drop the kept stats db")
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="only re-write the report from a run's figures"
    )
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--sender-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--scheduler-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument(
        "--sweep",
        default=DEFAULT_SWEEP,
        help="settings variants tried one at a time against the run's settings: "
        "'KEY=V[,KEY=V];KEY=V;...' ('' for none)",
    )
    parser.add_argument("--sweep-messages", type=int, default=10_000)
    parser.add_argument("--short-clients", type=int, default=2_000)
    parser.add_argument(
        "--baseline",
        default=BASELINE_REV,
        help="git revision whose services the *-baseline runs use ('' for none)",
    )
    parser.add_argument("--short-runs", type=int, default=3, help="short-mailing runs (0: none)")
    parser.add_argument(
        "--budget-s", type=float, default=840.0, help="skip the sweep to stay within this"
    )
    parser.add_argument(
        "--e2e-runs",
        help="comma-separated subset of 0ms-warning,50ms-warning",
    )
    parser.add_argument("--tracing-messages", type=int, default=20_000)
    parser.add_argument(
        "--tracing-rounds", type=int, default=2, help="off / on-at-1%% pairs, alternated"
    )
    parser.add_argument("--report", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--work-dir", default=str(ROOT / "build" / "bench"))
    parser.add_argument("--wait-quiet", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--wait-quiet-s", type=float, default=1800.0)
    parser.add_argument("--max-load", type=float, default=1.5)
    return parser


SMOKE = {
    "sweep": "",
    "step_tail_s": 1.0,
    "sweep_messages": 300,
    "short_clients": 200,
    "short_runs": 1,
    "baseline": "",
    "clients": 500,
    "fanout_clients": 5_000,
    "stats_rows": 20_000,
    "fanout_seconds": 3.0,
    "tiny_during_s": 0.5,
    "tiny_timeout": 15.0,
    "scaleout_messages": 200,
    "http_seconds": 0.5,
    "broker_sequential": 100,
    "broker_gathered": 500,
    "api_seconds": 0.5,
    "import_rows": 5_000,
    "import_mailing_clients": 2_000,
    "stats_requests": 10,
    "stats_throwaway": True,
    "tracing_messages": 300,
    "tracing_rounds": 1,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.render:
        from bench.report import render

        Path(args.report).write_text(render(json.loads(Path(args.render).read_text())))
        print(f"report: {args.report}")
        return
    if args.drop_stats_db:
        name = args.stats_db or stats_db.default_name(args.stats_rows)
        stats_db.drop(name)
        print(f"dropped {name}")
        return
    if args.smoke:
        defaults = build_parser().parse_args([])
        for key, value in SMOKE.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    if args.wait_quiet is None:
        args.wait_quiet = not args.smoke
    bench = Bench(args)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    asyncio.run(run(bench))


if __name__ == "__main__":
    main()
