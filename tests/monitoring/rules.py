"""The alert rules of deploy/k8s/base/prometheusrule.yaml as a plain Prometheus rule file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_RULE = ROOT / "deploy/k8s/base/prometheusrule.yaml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def rule_groups() -> list[dict[str, Any]]:
    """spec.groups of the PrometheusRule: the same schema as a rule file's `groups`."""
    document = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert document["kind"] == "PrometheusRule"
    return list(document["spec"]["groups"])


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def write_rule_file(path: Path, groups: list[dict[str, Any]] | None = None) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups or rule_groups()}, sort_keys=False))
    return path
