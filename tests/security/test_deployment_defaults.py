"""Deployment defaults: weak API tokens, the api's published port, failed authentication from
one address, trusted proxies, the production overlay's secret, who reaches /metrics, q=²."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
import yaml
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY

from services.api.app import create_app
from services.api.events import NoEvents
from services.api.ui.auth.oidc import Provider
from shared.settings import ApiSettings
from tests.conftest import ADMIN_TOKEN
from tests.infra.kustomize import render
from tests.security.conftest import AUTH_FAILURES_PER_MINUTE
from tests.support import database
from tests.support.database import ROOT
from tests.support.processes import ServiceProcess
from tests.ui.pages_fixtures import console_app, console_client, console_settings

__all__ = ["console_app", "console_client", "console_settings"]

WEAK = ["change-me", "demo-admin-token", "short-but-random-7f3a", "ops:admin:" + "ab" * 20]


def test_weak_or_placeholder_tokens_stop_the_api_at_start() -> None:
    for token in WEAK:
        started = subprocess.run(
            [sys.executable, "-m", "services.api"],
            cwd=ROOT,
            env=os.environ | {"API_TOKENS": token, "API_PORT": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode != 0, token
        assert "openssl rand -hex 32" in started.stderr, started.stderr
        assert token.rsplit(":", 1)[-1] not in started.stderr  # never the token itself


def test_docs_and_examples_use_no_placeholder_tokens() -> None:
    places = [ROOT / "README.md", ROOT / "docker-compose.yml", *(ROOT / "docs").glob("*.md")]
    places += (ROOT / "deploy").rglob("*.yaml")
    for path in places:
        text = path.read_text()
        for used in ("API_TOKENS=change-me", "API_TOKENS: change-me", "Bearer change-me",
                     "API_TOKENS: demo-admin-token"):  # fmt: skip
            assert used not in text, (path, used)


def test_compose_publishes_the_api_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def _metric(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


async def test_failed_tokens_are_rate_limited_per_address(api_settings: ApiSettings) -> None:
    limit = 5
    app = create_app(
        api_settings.model_copy(update={"auth_failures_per_minute": limit}), events=NoEvents()
    )
    async with LifespanManager(app) as manager:
        await _guess_tokens(manager.app, limit)


async def _guess_tokens(api_app: Any, limit: int) -> None:
    before = _metric("mailing_api_auth_failures_total", "api_token")

    def client(address: str, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api_app, client=(address, 40000)),
            base_url="http://api.test",
            headers={"Authorization": f"Bearer {token}"},
        )

    async with client("198.51.100.7", "wrong-" * 6) as guesser:
        for _ in range(limit):
            assert (await guesser.get("/api/v1/clients")).status_code == 401
        refused = await guesser.get("/api/v1/clients")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    async with client("198.51.100.7", ADMIN_TOKEN) as same_address:
        assert (await same_address.get("/api/v1/clients")).status_code == 429
    async with client("198.51.100.8", ADMIN_TOKEN) as other_address:
        assert (await other_address.get("/api/v1/clients")).status_code == 200
    assert _metric("mailing_api_auth_failures_total", "api_token") - before == limit
    assert _metric("mailing_api_auth_throttled_total", "api_token") >= 2


async def test_behind_the_ingress_the_real_address_counts(
    api_process: ServiceProcess, clean_db: str
) -> None:
    """uvicorn trusts FORWARDED_ALLOW_IPS (here the test, on loopback, is the controller): the
    limit and the audit log see X-Forwarded-For's address, and the scheme is https."""
    async with httpx.AsyncClient(base_url=api_process.url, timeout=10) as client:

        def via(address: str, token: str) -> dict[str, str]:
            return {
                "Authorization": f"Bearer {token}",
                "X-Forwarded-For": address,
                "X-Forwarded-Proto": "https",
            }

        for _ in range(AUTH_FAILURES_PER_MINUTE):
            wrong = await client.get("/api/v1/clients", headers=via("203.0.113.5", "x" * 40))
            assert wrong.status_code == 401
        limited = await client.get("/api/v1/clients", headers=via("203.0.113.5", ADMIN_TOKEN))
        assert limited.status_code == 429
        created = await client.post(
            "/api/v1/clients",
            json={"phone": "79990000002", "tag": "t", "timezone": "UTC"},
            headers=via("203.0.113.6", ADMIN_TOKEN),
        )
        assert created.status_code == 201, created.text
        # The absolute links the console makes (here its stylesheet's) stay https.
        page = await client.get("/ui/", headers=via("203.0.113.6", ADMIN_TOKEN))
        assert f"https://127.0.0.1:{api_process.port}/ui/static/console.css" in page.text
        assert f"http://127.0.0.1:{api_process.port}/ui/static" not in page.text
    with database.connect(clean_db) as conn:
        row = conn.execute("SELECT source FROM audit_log WHERE action = 'create'").fetchone()
    assert row is not None and row[0] == "203.0.113.6"


def _objects(overlay: str) -> list[dict[str, Any]]:
    return render(ROOT / "deploy" / "k8s" / "overlays" / overlay)


def _api_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    api = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "api")
    return {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_manifests_trust_the_ingress_and_production_requires_the_session_secret() -> None:
    production = _api_env(_objects("production"))
    assert production["FORWARDED_ALLOW_IPS"]["value"]
    secret_ref = production["UI_SESSION_SECRET"]["valueFrom"]["secretKeyRef"]
    assert secret_ref.get("optional", False) is False
    docs = (ROOT / "docs" / "DEPLOY.md").read_text() + (ROOT / "docs" / "SECURITY.md").read_text()
    assert "FORWARDED_ALLOW_IPS" in docs


def test_only_prometheus_and_the_ingress_reach_the_api_pods() -> None:
    objects = _objects("production")
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    api_policy = next(p for p in policies if p["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "api"})  # fmt: skip
    assert api_policy["spec"]["policyTypes"] == ["Ingress"]
    sources = [rule["from"] for rule in api_policy["spec"]["ingress"]]
    assert len(sources) == 2 and all(sources)  # no rule open to every pod
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    public = {
        path["path"]
        for i in ingresses
        for rule in i["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert not any("/metrics".startswith(p.rstrip("/") or "/") for p in public), public


async def test_a_superscript_digit_search_is_no_500(
    api: httpx.AsyncClient, api_settings: ApiSettings
) -> None:
    """The search of `list_mailings` (the console's; the REST list has no `q` here) takes "²"
    as text: `isdigit()` says yes to it, `int()` does not."""
    from services.api.mailings.service import list_mailings
    from shared.db import create_engine, create_session_factory

    engine = create_engine(api_settings)
    try:
        async with create_session_factory(engine)() as session:
            found = await list_mailings(session, limit=10, after_id=0, status=None, search="²")
    finally:
        await engine.dispose()
    assert found == []
    assert (await api.get("/mailings", params={"q": "²"})).status_code == 200


async def test_a_superscript_digit_in_the_console_is_no_500(console_client: Any) -> None:
    viewer = await console_client("viewer")
    assert (await viewer.get("/ui/mailings", params={"q": "²"})).status_code == 200
    assert (await viewer.get("/ui/mailings", params={"notice": "x", "count": "²"})).is_success


async def test_failed_sign_in_callbacks_are_rate_limited_per_address(
    console_settings: ApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged or replayed callback (its state unknown) fails before any token exchange; after
    AUTH_FAILURES_PER_MINUTE of them, that address gets 429 while another is still heard."""

    async def metadata(self: Provider) -> dict[str, Any]:
        return {"issuer": console_settings.oidc_issuer}

    monkeypatch.setattr(Provider, "metadata", metadata)
    limit = 3
    app = create_app(
        console_settings.model_copy(update={"auth_failures_per_minute": limit}), events=NoEvents()
    )
    failures = _metric("mailing_api_auth_failures_total", "sign_in")
    throttled = _metric("mailing_api_auth_throttled_total", "sign_in")
    forged = {"code": "stolen", "state": "forged"}
    async with LifespanManager(app) as manager:

        def browser(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=manager.app, client=(address, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://console.test")

        async with browser("198.51.100.9") as guesser:
            for _ in range(limit):
                response = await guesser.get("/ui/auth/callback", params=forged)
                assert response.status_code == 400, response.text
            refused = await guesser.get("/ui/auth/callback", params=forged)
        async with browser("198.51.100.10") as other:
            assert (await other.get("/ui/auth/callback", params=forged)).status_code == 400
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert _metric("mailing_api_auth_failures_total", "sign_in") - failures == limit + 1
    assert _metric("mailing_api_auth_throttled_total", "sign_in") - throttled == 1
