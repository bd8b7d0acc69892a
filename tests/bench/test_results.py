"""The benchmark's typed phase results keep results.json's shape (the report and `--render`
read it), and the soak's least-squares slope is right."""

from __future__ import annotations

from bench.phases.e2e import E2EResult
from bench.phases.http import HttpResult
from bench.phases.scaleout import ScaleoutResult
from bench.system import slope


def test_e2e_result_stores_its_runs_ceilings_and_sweep_under_their_old_keys() -> None:
    results = {
        "e2e": {"clients": 10, "seed_s": 0.1, "runs": {"0ms-warning": {"rate": 5.0}}},
        "ceilings": {"aiohttp@0ms": {"rate": 9.0}},
        "sweep": {"skipped": "budget"},
    }
    parsed = E2EResult.from_figures(results)
    assert parsed is not None
    assert parsed.runs["0ms-warning"]["rate"] == 5.0
    assert parsed.figures() == results


def test_optional_fields_left_unset_stay_out_and_unknown_keys_are_kept() -> None:
    body = {"messages": 4, "latency_ms": 200, "max_connections": 5, "runs": {}, "later": 1}
    parsed = ScaleoutResult.from_body(body)
    assert parsed.speedup is None
    assert parsed.figures() == {"scaleout": body}
    assert HttpResult.from_figures({}) is None


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([(0, 1.0), (1, 3.0), (2, 5.0)]) == 2.0
    assert slope([(0, 1.0), (1, 0.0), (2, 1.0), (3, 0.0)]) == -0.2
    assert slope([(0, 1.0), (1, 2.0)]) is None
    assert slope([(1, 1.0), (1, 2.0), (1, 3.0)]) is None
