"""deploy/grafana/mailing-dashboard.json: valid, and only about metrics that exist."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.infra.conftest import ROOT
from tests.infra.known import metric_names


def load() -> dict[str, Any]:
    return json.loads((ROOT / "deploy/grafana/mailing-dashboard.json").read_text())


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = load()
    known = metric_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), expr
            assert 'namespace="$namespace"' in expr, expr
            used |= set(re.findall(r"\bmailing_[a-z0-9_]+", expr))
    assert used <= known, used - known
    for required in (
        "mailing_backlog_messages",
        "mailing_breaker_state",
        "mailing_provider_requests_total",
        "mailing_message_outcomes_total",
        "mailing_provider_request_seconds_bucket",
        "mailing_provider_token_expiry_timestamp_seconds",
    ):
        assert required in used


def test_dashboard_is_importable() -> None:
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
