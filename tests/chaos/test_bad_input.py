"""Bad input against the running API process: schemathesis (stateless, positive and negative, and
stateful over the links it infers) and hypothesis on the domain rules find no 5xx and no
unhandled exception; a rejected request changes nothing; oversized bodies get 413 and huge pages
422. The API runs as a real uvicorn process over a directory of 5,000 clients."""

from __future__ import annotations

import asyncio
import os
import string
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis import GenerationMode

from shared.domain.clients import (
    default_operator_code,
    is_valid_operator_code,
    is_valid_phone,
    is_valid_timezone,
)
from tests.chaos.rig import API_TOKEN, Rig, open_rig

pytestmark = pytest.mark.pipeline

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
EXAMPLES = int(os.environ.get("CHAOS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
)
TABLES = ("client", "mailing", "message", "message_count")


def snapshot(rig: Rig) -> dict[str, str]:
    """Every table's row count and a digest of its content."""
    out = {}
    with rig.db() as conn:
        for table in TABLES:
            key = "mailing_id, status" if table == "message_count" else "id"
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {key}), ''))"
                f" FROM {table} t"
            ).fetchone()
            assert row is not None
            out[table] = f"{row[0]}:{row[1]}"
    return out


def api_failures(rig: Rig) -> list[str]:
    assert rig.api_process is not None
    lines = rig.api_process.log_text().splitlines()
    return [
        line[:300]
        for line in lines
        if "Traceback" in line or "Exception in ASGI" in line or '"status": 5' in line
    ]


async def _seed(rig: Rig) -> dict[str, Any]:
    rig.seed_clients(5000, tag="fuzz")
    # A mailing of the 5,000 that starts tomorrow: real ids for the generated paths to hit.
    return await rig.create_mailing(starts_in=86400, ends_in=2 * 86400, tags=["fuzz"])


async def test_schemathesis_finds_no_server_error(servers: dict[str, Any]) -> None:
    async with open_rig("bad input: schemathesis", **servers) as rig:
        await _seed(rig)
        await rig.start()  # mailings the fuzzer creates really start and fan out
        base = f"http://127.0.0.1:{rig.api_port}"
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        statuses: Counter[str] = Counter()
        # Kept aside as well as asserted: a 5xx is reported even if Hypothesis, replaying it
        # against a server whose state moved on, gives up with a Flaky error.
        server_errors: list[str] = []

        def check(kind: str, case: schemathesis.Case, response: Any) -> None:
            statuses[f"{kind} {response.status_code}"] += 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}\n{case.as_curl_command(headers=AUTH)}"
                )
                raise AssertionError(server_errors[-1])

        def stateless(mode: GenerationMode) -> None:
            @FUZZ
            @given(case=schema.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                check(mode.value, case, case.call(base_url=base, headers=AUTH, timeout=30))

            run()

        class Workflow(schema.as_state_machine()):  # type: ignore[misc]
            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
                return {"base_url": base, "headers": AUTH, "timeout": 30}

            def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
                check("stateful", case, response)

        restarts = 0

        def stateful() -> None:
            # The machine's rules depend on what the server answered, which Hypothesis cannot
            # replay; like schemathesis' own runner, start over when it reports that as Flaky.
            nonlocal restarts
            for _ in range(3):
                try:
                    Workflow.run(
                        settings=settings(
                            max_examples=max(EXAMPLES // 5, 10),
                            stateful_step_count=8,
                            deadline=None,
                            database=None,
                            suppress_health_check=list(HealthCheck),
                        )
                    )
                    return
                except Flaky:
                    if server_errors:
                        raise
                    restarts += 1

        await asyncio.to_thread(stateless, GenerationMode.POSITIVE)
        await asyncio.to_thread(stateless, GenerationMode.NEGATIVE)
        await asyncio.to_thread(stateful)

        assert server_errors == []
        assert api_failures(rig) == []
        assert rig.api_process is not None and rig.api_process.process.poll() is None
        requests = sum(statuses.values())
        rig.figures.update(
            requests=requests, by_status=dict(sorted(statuses.items())), flaky_restarts=restarts
        )
        rig.finish(server_errors=0)


def _client_body() -> st.SearchStrategy[dict[str, Any]]:
    digits = st.text(alphabet=string.digits, min_size=10, max_size=10)
    phone = st.one_of(digits.map(lambda d: "7" + d), st.text(max_size=14))
    code = st.one_of(st.none(), st.text(alphabet=string.digits, min_size=3, max_size=3), st.text())
    zone = st.one_of(
        st.sampled_from(["UTC", "Europe/Moscow", "Asia/Vladivostok", "America/New_York"]),
        st.text(max_size=40),
    )
    tag = st.one_of(st.just(""), st.text(max_size=120))
    return st.fixed_dictionaries(
        {"phone": phone, "timezone": zone, "tag": tag},
        optional={"operator_code": code, "extra": st.text(max_size=5)},
    )


def _client_is_valid(body: dict[str, Any]) -> bool:
    code = body.get("operator_code")
    return (
        "extra" not in body
        and is_valid_phone(body["phone"])
        and is_valid_timezone(body["timezone"])
        and (code is None or is_valid_operator_code(code))
        and len(body["tag"]) <= 100
        and "\x00" not in body["tag"]
    )


def _moment() -> st.SearchStrategy[str]:
    now = datetime.now(UTC)
    aware = st.datetimes(
        min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29), timezones=st.just(UTC)
    )
    near = st.floats(min_value=-7200, max_value=7 * 86400).map(
        lambda s: (now + timedelta(seconds=s)).isoformat()
    )
    naive = st.datetimes().map(lambda d: d.isoformat())  # no offset: must be refused
    return st.one_of(near, aware.map(lambda d: d.isoformat()), naive, st.text(max_size=30))


def _mailing_body() -> st.SearchStrategy[dict[str, Any]]:
    hhmm = st.one_of(
        st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 24), st.integers(0, 61)),
        st.text(max_size=6),
    )
    return st.fixed_dictionaries(
        {"start_at": _moment(), "end_at": _moment(), "text": st.text(max_size=1100)},
        optional={
            "filter": st.fixed_dictionaries(
                {},
                optional={
                    "operator_codes": st.lists(st.text(max_size=4), max_size=3),
                    "tags": st.lists(st.text(max_size=20), max_size=3),
                },
            ),
            "send_window": st.fixed_dictionaries({"start": hhmm, "end": hhmm}),
        },
    )


async def test_domain_rules_hold_and_rejections_change_nothing(servers: dict[str, Any]) -> None:
    async with open_rig("bad input: hypothesis domain rules", **servers) as rig:
        mailing = await _seed(rig)
        base = f"http://127.0.0.1:{rig.api_port}/api/v1"
        outcomes: Counter[str] = Counter()

        def clients() -> None:
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:

                @FUZZ
                @given(body=_client_body())
                def run(body: dict[str, Any]) -> None:
                    before = snapshot(rig)
                    response = http.post("/clients", json=body)
                    outcomes[f"client {response.status_code}"] += 1
                    assert response.status_code < 500, response.text
                    if not _client_is_valid(body):
                        assert response.status_code == 422, (body, response.text)
                    elif response.status_code != 409:  # 409: that phone is taken
                        assert response.status_code == 201, (body, response.text)
                        stored = http.get(f"/clients/{response.json()['id']}").json()
                        code = body.get("operator_code") or default_operator_code(body["phone"])
                        expected = {k: body[k] for k in ("phone", "timezone", "tag")}
                        assert stored["operator_code"] == code
                        assert {k: stored[k] for k in expected} == expected
                    if response.status_code >= 400:
                        assert snapshot(rig) == before, f"a rejected {body} changed the database"

                run()

        def mailings() -> None:
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:

                @FUZZ
                @given(body=_mailing_body(), patch=st.booleans())
                def run(body: dict[str, Any], patch: bool) -> None:
                    before = snapshot(rig)
                    if patch:
                        response = http.patch(f"/mailings/{mailing['id']}", json=body)
                    else:
                        response = http.post("/mailings", json=body)
                    outcomes[f"mailing {'patch' if patch else 'post'} {response.status_code}"] += 1
                    assert response.status_code < 500, (body, response.text)
                    if response.status_code >= 400:
                        assert response.status_code in (409, 422), (body, response.text)
                        assert snapshot(rig) == before, f"a rejected {body} changed the database"
                    else:
                        stored = http.get(f"/mailings/{response.json()['id']}").json()
                        assert stored["text"] == body["text"]
                        start = datetime.fromisoformat(body["start_at"])
                        end = datetime.fromisoformat(body["end_at"])
                        assert start.tzinfo is not None and end > start
                        if patch:  # keep the target mailing valid for the next example
                            http.patch(
                                f"/mailings/{mailing['id']}",
                                json={
                                    "start_at": mailing["start_at"],
                                    "end_at": mailing["end_at"],
                                },
                            )

                run()

        await asyncio.to_thread(clients)
        await asyncio.to_thread(mailings)
        assert api_failures(rig) == []
        rig.figures.update(
            requests=sum(outcomes.values()), by_status=dict(sorted(outcomes.items()))
        )
        rig.finish(server_errors=0)


async def test_oversized_bodies_and_huge_pages_are_refused(servers: dict[str, Any]) -> None:
    async with open_rig("bad input: 413 and 422 limits", **servers) as rig:
        mailing = await _seed(rig)
        assert rig.api is not None
        before = snapshot(rig)
        big = "x" * (300 * 1024)
        bodies = {
            ("POST", "/clients"): {"phone": "79990000001", "timezone": "UTC", "tag": big},
            ("PUT", "/clients/1"): {"phone": "79990000001", "timezone": "UTC", "tag": big},
            ("PATCH", "/clients/1"): {"tag": big},
            ("POST", "/mailings"): {"start_at": "x", "end_at": "y", "text": big},
            ("PATCH", f"/mailings/{mailing['id']}"): {"text": big},
            ("POST", "/mailings/preview"): {"filter": {"tags": [big]}},
        }
        statuses = {}
        for (method, path), body in bodies.items():
            response = await rig.api.request(method, path, json=body)
            assert response.status_code == 413, (method, path, response.status_code)
            statuses[f"{method} {path}"] = response.status_code

            async def chunks(payload: bytes = response.request.content) -> Any:
                for i in range(0, len(payload), 16 * 1024):
                    yield payload[i : i + 16 * 1024]

            # Streamed without a Content-Length: refused once 256 KiB have arrived.
            chunked = await rig.api.request(
                method, path, content=chunks(), headers={"Content-Type": "application/json"}
            )
            assert chunked.status_code == 413, (method, path, "chunked", chunked.status_code)
        for path in (
            "/clients",
            "/mailings",
            "/mailings/stats",
            f"/mailings/{mailing['id']}/messages",
        ):
            response = await rig.api.get(path, params={"limit": 100000})
            assert response.status_code == 422, (path, response.status_code, response.text)
            statuses[f"GET {path}?limit=100000"] = response.status_code
        assert snapshot(rig) == before
        assert api_failures(rig) == []
        rig.finish(by_status=statuses)
