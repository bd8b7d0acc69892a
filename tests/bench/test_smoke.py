"""`make bench-smoke` as a test: every benchmark phase runs at a tiny size and the report is
written. Only that it works is checked; the figures of a tiny run on a shared machine mean
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.database import ADMIN_DSN, ROOT

pytestmark = pytest.mark.pipeline

SECTIONS = (
    "## Targets",
    "## Machine",
    "## Settings",
    "## End-to-end throughput",
    "### Ceilings",
    "## HTTP clients",
    "## Scale-out",
    "## Fan-out",
    "## Broker",
    "## Statistics",
    "## Admin API",
    "## CSV import",
)


def test_bench_smoke_runs_every_phase_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    work = tmp_path / "work"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--report",
            str(report),
            "--work-dir",
            str(work),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    output = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    text = report.read_text()
    missing = [section for section in SECTIONS if section not in text]
    assert not missing, f"report lacks {missing}:\n{output}"
    assert "Phases that failed" not in text, text[:3000]
    (results_file,) = work.glob("*/results.json")
    results = json.loads(results_file.read_text())
    assert not results["errors"]
    assert results["e2e"]["runs"]["0ms-warning"]["sent"] == 500
    assert results["stats"]["rows_measured"], results["stats"]
    # The run's own database and the throwaway statistics database are gone.
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            [[results["database"], results["stats"]["database"]]],
        ).fetchall()
    assert not left
