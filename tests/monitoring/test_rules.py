"""The alert rules checked by Prometheus's own promtool: `check rules`, and `test rules` with
tests/monitoring/alerts.test.yaml, which has a firing and a quiet case for every alert."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring.rules import PROMTOOL, alerts, rule_groups, write_rule_file

HERE = Path(__file__).resolve().parent
UNIT_TESTS = HERE / "alerts.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """rules.yaml (extracted from the PrometheusRule) beside a copy of the unit tests."""
    write_rule_file(tmp_path / "rules.yaml")
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def test_promtool_checks_the_rules(workdir: Path) -> None:
    result = promtool("check", "rules", str(workdir / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rule_groups())} rules found" in result.stdout


def test_promtool_unit_tests_pass(workdir: Path) -> None:
    result = promtool("test", "rules", str(workdir / UNIT_TESTS.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they stay quiet"
    # Both severities of the token expiry alert are shown firing.
    severities = {
        alert["exp_labels"]["severity"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == "MailingProviderTokenExpiresSoon"
        for alert in case["exp_alerts"]
    }
    assert severities == {"warning", "critical"}


@pytest.mark.parametrize("alert", sorted({rule["alert"] for rule in alerts()}))
def test_the_unit_tests_catch_an_alert_that_never_fires(alert: str, workdir: Path) -> None:
    """The unit tests are not vacuous: with this alert's expression replaced by one that is
    never true, they fail."""
    groups = copy.deepcopy(rule_groups())
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) < 0"
    write_rule_file(workdir / "rules.yaml", groups)
    result = promtool("test", "rules", str(workdir / UNIT_TESTS.name))
    assert result.returncode != 0
    assert f"alertname: {alert}," in result.stdout + result.stderr
