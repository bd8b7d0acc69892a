"""`python -m tests.chaos.report [--run RUN_ID] [results.jsonl]`: a chaos run as a Markdown table.

Reads `$CHAOS_RESULTS` (default `.chaos-results.jsonl`), keeps the records of one run (the most
recent unless `--run` names another; every pytest session is a run, so a partial re-run becomes
the most recent), and prints the figures docs/RELIABILITY.md reports.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.chaos.rig import RESULTS_PATH


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def select_run(records: list[dict[str, Any]], run_id: str | None) -> list[dict[str, Any]]:
    if not records:
        return []
    run_id = run_id or records[-1]["run_id"]
    return [r for r in records if r["run_id"] == run_id]


def _cell(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "–" if value is None else str(value)


def table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | messages | duplicates (bound) | after end | recover s | run s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        dup = _cell(r, "duplicates")
        if "duplicate_bound" in r:
            dup += f" (≤ {r['duplicate_bound']})"
        lines.append(
            f"| {r['scenario']} | {_cell(r, 'messages')} | {dup} | {_cell(r, 'after_end')} "
            f"| {_cell(r, 'recover_s')} | {r['duration_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS_PATH)
    parser.add_argument("--run", help="a run id (default: the most recent)")
    args = parser.parse_args()
    records = load(args.results)
    runs = Counter(r["run_id"] for r in records)
    selected = select_run(records, args.run)
    if not selected:
        raise SystemExit(f"no chaos results for that run in {args.results}")
    print("Runs: " + ", ".join(f"{run} ({n} scenarios)" for run, n in runs.items()) + "\n")
    print(f"Run {selected[0]['run_id']} ({len(selected)} scenarios)\n")
    print(table(selected))
    print()
    for r in selected:
        print(f"- {r['scenario']}: {json.dumps(r, ensure_ascii=False)}")


if __name__ == "__main__":
    main()
