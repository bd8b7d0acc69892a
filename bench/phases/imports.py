"""Phase `import`: a CSV import of --import-rows clients through `POST /clients/imports` while
a mailing sends, then both CSV exports (the work itself is in bench/import_phase.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.context import Bench, log
from bench.import_phase import run_import_phase
from bench.phases.result import PhaseResult
from bench.report import fmt, table

if TYPE_CHECKING:
    from bench.report import Report


@dataclass(kw_only=True)
class ImportPhaseResult(PhaseResult):
    """The figures of bench/import_phase.py's ImportResult, as it stores them (in `extra`)."""

    key = "import"

    def render(self, report: Report) -> None:
        result = self.body()
        met = result["targets_met"]
        if met["kept_sending"]:
            sending = "kept sending"
        elif result.get("mailing_done_before"):
            sending = "not measured: the mailing was done before the import"
        else:
            sending = "NOT met: stopped sending"
        rows = [
            ["rows", fmt(result["rows"]), f"{fmt(result['file_mb'])} MB file"],
            [
                "import time (POST to done)",
                f"{fmt(result['total_s'])} s",
                "met" if met["under_60_s"] else "NOT met (target < 60 s)",
            ],
            ["upload (POST to 202)", f"{fmt(result['upload_s'])} s", ""],
            ["rows/s", fmt(result["rows_per_s"]), ""],
            ["created / rejected", f"{fmt(result['created'])} / {fmt(result['rejected'])}", ""],
            [
                "api RSS start / peak",
                f"{fmt(result['api_rss_start_mb'])} / {fmt(result['api_rss_peak_mb'])} MB",
                "met" if met["rss_under_200_mb"] else "NOT met (target < 200 MB)",
            ],
            [
                "mailing sends/s before / during",
                f"{fmt(result['sent_per_s_before'])} / {fmt(result['sent_per_s_during'])}",
                sending,
            ],
        ]
        for export in result.get("exports", []):
            rows.append(
                [
                    f"GET {export['path']}",
                    f"{fmt(export['rows'])} rows, {fmt(export['mb'])} MB in"
                    f" {fmt(export['seconds'])} s,"
                    f" api RSS peak {fmt(export['api_rss_peak_mb'])} MB",
                    "met" if export["api_rss_peak_mb"] < 200 else "NOT met (target < 200 MB)",
                ]
            )
        report.add(
            f"## CSV import ({fmt(result['rows'])} rows through POST /clients/imports)\n\n"
            f"Status `{result['status']}`, while a {fmt(result['mailing_clients'])}-client"
            " mailing sends.\n\n" + table(["figure", "value", "target"], rows)
        )


async def run(bench: Bench) -> ImportPhaseResult:
    assert bench.pg is not None and bench.stub_ctl is not None
    await bench.reset_messages(clients=True)
    await bench.stub_ctl.reset()
    dep = await bench.deploy(bench.deployment("import"))
    try:
        result = await run_import_phase(
            dep=dep,
            pg=bench.pg,
            work_dir=bench.run_dir,
            rows=bench.args.import_rows,
            mailing_clients=bench.args.import_mailing_clients,
        )
    finally:
        await bench.undeploy(dep)
    log(
        f"  import {result.rows} rows: {result.total_s}s, api RSS peak"
        f" {result.api_rss_peak_mb} MB, sent {result.sent_per_s_during}/s during"
    )
    return bench.keep(ImportPhaseResult(extra=result.as_dict()))
