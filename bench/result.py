"""The typed result of a benchmark phase: a dataclass that stores itself in the run's figures
(results.json, whose shape the report and `--render` read) and renders its report sections."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self

from bench.format import Report


@dataclass(kw_only=True)
class PhaseResult:
    """`key` is where the phase's figures live in results.json. Fields left None are left out
    (as the figures were before they were typed); keys a field does not name stay in `extra`."""

    key: ClassVar[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = value
        return out

    def figures(self) -> dict[str, Any]:
        """results.json keys -> figures."""
        return {self.key: self.body()}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in body.items() if k in names}
        return cls(**known, extra={k: v for k, v in body.items() if k not in names})

    @classmethod
    def from_figures(cls, results: dict[str, Any]) -> Self | None:
        body = results.get(cls.key)
        return cls.from_body(body) if body else None

    def render(self, report: Report) -> None:
        """Add this phase's sections to the report."""
        raise NotImplementedError

    def render_appendix(self, report: Report) -> None:
        """Sections after every phase's own (the profiles)."""
