"""A real Prometheus (Debian's package) scrapes the running api, scheduler and sender during a
mailing; then every Grafana panel query and every alert expression is evaluated through its
HTTP API (each must parse and return data), and `promtool check metrics` reads each /metrics.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.provider_stub.app import StubConfig, start_stub
from tests.conftest import ADMIN_TOKEN
from tests.monitoring.rules import PROMETHEUS, PROMTOOL, ROOT, alerts, write_rule_file
from tests.pipeline.conftest import Pipeline
from tests.support.rig.processes import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.pipeline

DASHBOARD = ROOT / "deploy/grafana/mailing-dashboard.json"
NAMESPACE = "mailing"  # the label the ServiceMonitor's relabelling gives every target
RATE_INTERVAL = "30s"  # Grafana's $__rate_interval at a 1 s scrape interval, rounded up

# Panels whose query has no series in a short, healthy run, and why (each still must parse).
NO_DATA_EXPECTED = {
    # Dead-lettering needs a job to outlive the send queue's TTL or to be rejected as poison:
    # tests/pipeline/test_jobs.py covers both; this run is healthy.
    'sum by (reason) (rate(mailing_dead_letters_total{namespace="mailing"}[30s]))',
}
# Alerts whose expression legitimately has no result while everything is up.
ALERT_QUIET_WITHOUT_DATA = {
    "MailingDailyReportFailed": "kube_job_status_failed comes from kube-state-metrics",
    "MailingProviderDeliveryRateLow": "the ratio needs receipts: the pipeline's stub sends none",
}


def jwt(exp: float) -> str:
    """An unsigned JWT carrying `exp` (the sender reads the claim for its expiry gauge)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(exp)})}.c2ln"


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$namespace", NAMESPACE)
            expr = expr.replace("$__rate_interval", RATE_INTERVAL)
            found.append((panel["title"], expr))
    return found


class ApiProcess:
    """The API as its own process (the pipeline fixture's runs in-process, with no port)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.api"],
                cwd=ROOT,
                env=env | {"API_PORT": str(self.port), "API_TOKENS": ADMIN_TOKEN},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = write_rule_file(workdir / "rules.yaml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": f"{NAMESPACE}/{service}",
                    "static_configs": [
                        {
                            "targets": [address],
                            "labels": {"namespace": NAMESPACE, "service": service, "pod": service},
                        }
                    ],
                }
                for service, address in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        check = subprocess.run(
            [PROMTOOL, "check", "config", str(workdir / "prometheus.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = workdir / "prometheus.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        return dict(body["data"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def api_process(pipeline: Pipeline, tmp_path: Path) -> Iterator[ApiProcess]:
    api = ApiProcess(dict(os.environ) | pipeline.processes.base_env, tmp_path / "api.log")
    try:
        yield api
    finally:
        api.stop()


async def test_prometheus_scrapes_the_pipeline_and_every_query_returns_data(
    pipeline: Pipeline, api_process: ApiProcess, tmp_path: Path
) -> None:
    # The sender's provider token is a JWT with an expiry, so the expiry panel has a value;
    # its own stub accepts that token.
    token = jwt(time.time() + 30 * 86400)
    stub = await start_stub(config=StubConfig(token=token))
    try:
        scheduler = pipeline.start_scheduler()
        sender = pipeline.start_sender(
            provider_url=stub.url,
            provider_token=token,
            breaker_failure_threshold=5,
        )
        await scheduler.wait_ready()
        await sender.wait_ready()

        async def api_ready() -> bool:
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{api_process.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(api_ready, timeout=60, message="api process ready")

        prometheus = Prometheus(
            tmp_path,
            {
                "api": f"127.0.0.1:{api_process.port}",
                "scheduler": f"127.0.0.1:{scheduler.metrics_port}",
                "sender": f"127.0.0.1:{sender.metrics_port}",
            },
        )
        try:
            await _run_a_mailing(pipeline, api_process, stub)
            await _wait_for_scrapes(prometheus)
            _every_panel_returns_data(prometheus)
            _every_alert_expression_evaluates(prometheus)
        finally:
            prometheus.stop()
        _promtool_checks_metrics(api_process.url, scheduler.metrics_url, sender.metrics_url)
    finally:
        await stub.close()


async def _run_a_mailing(pipeline: Pipeline, api: ApiProcess, stub: Any) -> None:
    """One mailing through the api process with provider trouble along the way (garbage
    answers, then an outage that opens the breaker), and a second mailing deleted while it
    runs (the sweep cancels its messages, the sender drops their jobs)."""
    pipeline.seed_clients(400)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=f"{api.url}/api/v1", headers=headers) as client:
        stub.state.faults = stub.state.faults.merged({"garbage_rate": 0.2, "latency_ms": 20})
        body = {
            "start_at": "2020-01-01T00:00:00+00:00",
            "end_at": "2999-01-01T00:00:00+00:00",
            "text": "Watched by Prometheus",
        }
        first = (await client.post("/mailings", json=body)).json()
        assert (await client.get("/clients", params={"limit": 5})).status_code == 200
        assert (await client.get("/mailings/999999")).status_code == 404
        await wait_until(
            lambda: _sent(pipeline, first["id"], 100), timeout=60, message="first sends"
        )
        stub.state.faults = stub.state.faults.merged({"down": True})
        await wait_until(
            lambda: _on_sender_metrics(pipeline, "mailing_breaker_opened_total"),
            timeout=60,
            message="breaker opened",
        )
        # A second mailing whose jobs wait in the queue while the breaker is open; deleted
        # there, so the sender drops its jobs when it consumes again and the sweep cancels it.
        second = (await client.post("/mailings", json=body)).json()
        await wait_until(
            lambda: _queued(pipeline, second["id"]), timeout=60, message="second mailing queued"
        )
        assert (await client.delete(f"/mailings/{second['id']}")).status_code in (200, 204)
        stub.state.faults = stub.state.faults.merged({"down": False, "garbage_rate": 0.0})
        await wait_until(
            lambda: _on_sender_metrics(pipeline, "mailing_jobs_dropped_total"),
            timeout=60,
            message="jobs of the deleted mailing dropped",
        )
        await pipeline.wait_terminal(first["id"], 400, timeout=120)
        await client.get(f"/mailings/{first['id']}/stats")


async def _sent(pipeline: Pipeline, mailing_id: int, at_least: int) -> bool:
    return pipeline.message_counts(mailing_id).get("sent", 0) >= at_least


async def _queued(pipeline: Pipeline, mailing_id: int) -> bool:
    return pipeline.message_counts(mailing_id).get("queued", 0) > 0


async def _on_sender_metrics(pipeline: Pipeline, name: str) -> bool:
    """The labelled counter has a series (its first increment happened)."""
    sender = pipeline.processes.started[-1]
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{sender.metrics_url}/metrics")).text
    return bool(re.search(rf"^{name}\{{", text, re.M))


async def _wait_for_scrapes(prometheus: Prometheus) -> None:
    """Every target up, and more than a rate window of samples after the mailing."""

    async def scraped() -> bool:
        try:
            result = prometheus.query("count_over_time(up[40s]) >= 35")["result"]
        except (httpx.HTTPError, AssertionError):
            return False
        return len(result) == 3

    await wait_until(scraped, timeout=120, message="prometheus scraped every target")


def _every_panel_returns_data(prometheus: Prometheus) -> None:
    assert NO_DATA_EXPECTED <= {expr for _, expr in panel_queries()}, "stale exemption"
    empty = []
    for title, expr in panel_queries():
        data = prometheus.query(expr)
        if not data["result"] and expr not in NO_DATA_EXPECTED:
            empty.append((title, expr))
    assert not empty, f"panels without data: {empty}"


def _every_alert_expression_evaluates(prometheus: Prometheus) -> None:
    """Each alert's expression parses and runs; none fires in this recovered run (except the
    ones that need a series this setup cannot have), and Prometheus loaded every rule."""
    for rule in alerts():
        prometheus.query(rule["expr"])
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = [r for g in rules for r in g["rules"]]
    assert len(loaded) == len(alerts())
    assert all(r["health"] == "ok" for r in loaded), [r for r in loaded if r["health"] != "ok"]
    # Every metric the alerts read is one Prometheus scraped here (not a misspelt name);
    # kube-state-metrics' aside.
    for rule in alerts():
        if rule["alert"] in ALERT_QUIET_WITHOUT_DATA:
            continue
        for name in set(re.findall(r"\b(mailing_[a-z0-9_]+|up)\{", rule["expr"])):
            found = prometheus.query(f'count({{__name__="{name}", namespace="{NAMESPACE}"}})')
            assert found["result"], (rule["alert"], name)


def _promtool_checks_metrics(*urls: str) -> None:
    for url in urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        result = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (url, result.stdout + result.stderr)
