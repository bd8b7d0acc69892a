"""The report's building blocks, for bench/report.py and every phase's sections: number and
table formatting, and `Report`, the document a run's figures are written into."""

from __future__ import annotations

from typing import Any

PROCESSES = ("sender", "scheduler", "postgres_db", "rabbitmq", "api", "stub")
PROCESS_NAMES = {
    "sender": "sender",
    "scheduler": "scheduler",
    "postgres_db": "PostgreSQL (this database's backends)",
    "postgres_server": "PostgreSQL (whole server tree)",
    "rabbitmq": "RabbitMQ (beam.smp)",
    "api": "api",
    "stub": "provider stub (apart)",
}


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.{digits}f}"


def table(header: str | list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; `header` may be written as "a | b | c"."""
    if isinstance(header, str):
        header = [h.strip() for h in header.split("|")]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def met(ok: bool | None) -> str:
    return "-" if ok is None else ("**met**" if ok else "**not met**")


class Report:
    """The Markdown document of one run (`r`: its results.json), section by section."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text.strip("\n") + "\n")

    def text(self) -> str:
        return "\n".join(self.parts)

    def run(self, label: str) -> dict[str, Any] | None:
        runs: dict[str, Any] = self.r.get("e2e", {}).get("runs", {})
        return runs.get(label)

    def ceiling(self, key: str) -> dict[str, Any] | None:
        return self.r.get("ceilings", {}).get(key)

    @staticmethod
    def cpu_total_ms(run: dict[str, Any]) -> float | None:
        per = run.get("cpu_ms_per_msg", {})
        parts = [per.get(k) for k in ("sender", "scheduler", "postgres_db", "rabbitmq", "api")]
        if any(p is None for p in parts):
            return None
        return float(sum(p for p in parts if p is not None))

    @staticmethod
    def profile_tables(summary: dict[str, Any], top: int = 12) -> str:
        text = "Where the time goes, inclusive (a sample counts once per group):\n\n"
        text += table(["group", "% of samples"], [[g, f"{p}%"] for g, p in summary["groups"]])
        text += "\n\nTop functions by self time:\n\n"
        text += table(
            ["function", "self %"], [[f"`{n}`", f"{p}%"] for n, p in summary["self"][:top]]
        )
        text += "\n\nTop functions by inclusive time (below the event loop):\n\n"
        text += table(
            ["function", "inclusive %"],
            [[f"`{n}`", f"{p}%"] for n, p in summary["inclusive"][:top]],
        )
        return text + "\n"
