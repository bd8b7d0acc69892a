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
from bench.context import DEFAULT_SWEEP, ROOT, Bench, log
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


# Each size: its full default and its `--smoke` value (None: the same), and a help text.
SIZES: dict[str, tuple[float | int | str, float | int | str | None, str | None]] = {
    "clients": (50_000, 500, None),
    "fanout_clients": (1_000_000, 5_000, None),
    "stats_rows": (10_000_000, 20_000, None),
    "fanout_seconds": (60.0, 3.0, None),
    "fanout_timeout": (150.0, None, None),
    "tiny_during_s": (5.0, 0.5, None),
    "step_tail_s": (3.0, 1.0, "sending watched after the step's fan-out"),
    "tiny_timeout": (90.0, 15.0, None),
    "scaleout_messages": (4_000, 200, None),
    "scaleout_connections": (50, None, None),
    "http_seconds": (3.0, 0.5, None),
    "broker_sequential": (2_000, 100, None),
    "broker_gathered": (10_000, 500, None),
    "api_seconds": (6.0, 0.5, None),
    "api_concurrency": (16, None, None),
    "import_rows": (1_000_000, 5_000, None),
    "import_mailing_clients": (200_000, 2_000, None),
    "stats_requests": (300, 10, None),
    "stats_write_rate": (2_000.0, None, "rows/s"),
    "sweep": (
        DEFAULT_SWEEP,
        "",
        "settings variants tried one at a time against the run's settings: "
        "'KEY=V[,KEY=V];KEY=V;...' ('' for none)",
    ),
    "sweep_messages": (10_000, 300, None),
    "short_clients": (2_000, 200, None),
    "short_runs": (3, 1, "short-mailing runs (0: none)"),
    "budget_s": (840.0, None, "skip the sweep to stay within this"),
    "tracing_messages": (20_000, 300, None),
    "tracing_rounds": (2, 1, "off / on-at-1%% pairs, alternated"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmarks of the mailing pipeline")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it all works")
    for name, (default, _, text) in SIZES.items():
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, type=type(default), default=default, help=text)
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
    parser.add_argument("--e2e-runs", help="comma-separated subset of 0ms-warning,50ms-warning")
    parser.add_argument("--report", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--work-dir", default=str(ROOT / "build" / "bench"))
    parser.add_argument("--wait-quiet", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--wait-quiet-s", type=float, default=1800.0)
    parser.add_argument("--max-load", type=float, default=1.5)
    return parser


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
        args.stats_throwaway = True
        for key, (default, smoke, _) in SIZES.items():
            if smoke is not None and getattr(args, key) == default:
                setattr(args, key, smoke)
    if args.wait_quiet is None:
        args.wait_quiet = not args.smoke
    bench = Bench(args)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    asyncio.run(run(bench))


if __name__ == "__main__":
    main()
