import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from services.provider_stub.app import (
    OUTCOMES,
    Deliveries,
    Faults,
    RunningStub,
    StubConfig,
    start_stub,
)

TOKEN = "test-token"
OK = {"code": 0, "message": "OK"}
PHONE = 79001234567


@pytest.fixture
async def stub() -> AsyncIterator[RunningStub]:
    running = await start_stub(config=StubConfig(token=TOKEN, seed=42))
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def client(stub: RunningStub) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=stub.url, headers=headers, timeout=5) as c:
        yield c


def send(client: httpx.AsyncClient, msg_id: int, **overrides: object):
    body = {"id": msg_id, "phone": PHONE, "text": "hello"} | overrides
    return client.post(f"/send/{msg_id}", json=body)


async def set_faults(client: httpx.AsyncClient, **faults: object) -> dict:
    response = await client.put("/_control/faults", json=faults)
    assert response.status_code == 200, response.text
    return response.json()


async def stats(client: httpx.AsyncClient) -> dict:
    return (await client.get("/_control/stats")).json()


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_success_is_answered_and_recorded(client: httpx.AsyncClient) -> None:
    before = time.time()
    response = await send(client, 123, text="привет")
    assert response.status_code == 200
    assert response.json() == OK

    s = await stats(client)
    assert s["requests_total"] == 1
    assert s["by_outcome"] == dict.fromkeys(OUTCOMES, 0) | {"ok": 1}
    assert s["delivered_unique"] == 1
    assert s["duplicates"] == 0
    assert before <= s["first_received_at"] == s["last_received_at"] <= time.time()

    page = (await client.get("/_control/deliveries")).json()
    assert page["next_after_id"] is None
    [item] = page["items"]
    assert item == {
        "id": 123,
        "phone": PHONE,
        "text": "привет",
        "count": 1,
        "first_at": s["first_received_at"],
        "last_at": s["first_received_at"],
    }


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": ""}],
    ids=["missing", "wrong-token", "no-bearer-prefix", "empty"],
)
async def test_unauthorized(stub: RunningStub, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=stub.url, headers=headers) as anonymous:
        response = await send(anonymous, 1)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 401
    assert isinstance(body["message"], str)
    assert stub.state.by_outcome["unauthorized"] == 1
    assert stub.state.stats()["delivered_unique"] == 0


@pytest.mark.parametrize(
    ("path_id", "body"),
    [
        (5, {"id": 6, "phone": PHONE, "text": "x"}),
        (5, {"id": "5", "phone": PHONE, "text": "x"}),
        (5, {"phone": PHONE, "text": "x"}),
        (5, {"id": 5, "phone": 89001234567, "text": "x"}),
        (5, {"id": 5, "phone": 7900123456, "text": "x"}),
        (5, {"id": 5, "phone": str(PHONE), "text": "x"}),
        (5, {"id": 5, "phone": True, "text": "x"}),
        (5, {"id": 5, "phone": PHONE, "text": ""}),
        (5, {"id": 5, "phone": PHONE}),
        (5, "not json"),
        (5, [5, PHONE, "x"]),
        ("abc", {"id": 5, "phone": PHONE, "text": "x"}),
        (2**63, {"id": 2**63, "phone": PHONE, "text": "x"}),
    ],
    ids=[
        "id-mismatch",
        "id-string",
        "id-missing",
        "phone-not-7",
        "phone-10-digits",
        "phone-string",
        "phone-bool",
        "text-empty",
        "text-missing",
        "not-json",
        "not-object",
        "path-not-int",
        "path-over-int64",
    ],
)
async def test_bad_request(
    client: httpx.AsyncClient, stub: RunningStub, path_id: object, body: object
) -> None:
    content = body if isinstance(body, str) else httpx.Request("POST", "/", json=body).content
    response = await client.post(
        f"/send/{path_id}", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert response.json()["message"]
    assert stub.state.by_outcome["bad_request"] == 1
    assert stub.state.stats()["delivered_unique"] == 0


async def test_error_rate(client: httpx.AsyncClient) -> None:
    await set_faults(client, error_rate=1)
    response = await send(client, 1)
    assert response.status_code == 500
    assert response.json()["code"] == 500
    assert "Retry-After" not in response.headers

    await set_faults(client, error_status=503, retry_after=2.5)
    response = await send(client, 2)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2.5"

    s = await stats(client)
    assert s["by_outcome"]["error"] == 2
    assert s["delivered_unique"] == 0


async def test_garbage_rate(client: httpx.AsyncClient) -> None:
    await set_faults(client, garbage_rate=1)
    responses = await asyncio.gather(*(send(client, i) for i in range(1, 31)))
    for response in responses:
        assert response.status_code == 200
        try:
            body = response.json()
        except ValueError:
            continue
        assert body != OK
    s = await stats(client)
    assert s["by_outcome"]["garbage"] == 30
    assert s["delivered_unique"] == 0


async def test_status_override_with_retry_after(client: httpx.AsyncClient) -> None:
    await set_faults(client, status_override=429, retry_after=7)
    response = await send(client, 1)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["code"] == 429

    # The override answers every request, even one that would fail auth.
    response = await client.post("/send/2", json={}, headers={"Authorization": "nope"})
    assert response.status_code == 429

    await set_faults(client, status_override=400)
    response = await send(client, 3)
    assert response.status_code == 400
    assert "Retry-After" not in response.headers

    s = await stats(client)
    assert s["by_outcome"]["override"] == 3
    assert s["delivered_unique"] == 0


async def test_down(client: httpx.AsyncClient) -> None:
    await set_faults(client, down=True)
    response = await send(client, 1)
    assert response.status_code == 503
    assert response.content == b""
    assert "Retry-After" not in response.headers

    await set_faults(client, retry_after=1)
    assert (await send(client, 2)).headers["Retry-After"] == "1"

    await set_faults(client, down=False)
    assert (await send(client, 3)).json() == OK
    s = await stats(client)
    assert s["by_outcome"]["down"] == 2
    assert s["by_outcome"]["ok"] == 1


async def test_latency(client: httpx.AsyncClient) -> None:
    await set_faults(client, latency_ms=150, jitter_ms=20)
    started = time.perf_counter()
    response = await send(client, 1)
    elapsed = time.perf_counter() - started
    assert response.json() == OK
    assert elapsed >= 0.14


async def test_hang(client: httpx.AsyncClient, stub: RunningStub) -> None:
    await set_faults(client, hang_rate=1, hang_seconds=0.05)
    response = await send(client, 1)
    assert response.status_code == 504

    await set_faults(client, hang_seconds=30)
    with pytest.raises(httpx.TimeoutException):
        await client.post("/send/2", json={"id": 2, "phone": PHONE, "text": "x"}, timeout=0.2)
    s = await stats(client)
    assert s["by_outcome"]["hang"] == 2
    assert s["delivered_unique"] == 0


async def test_hung_request_does_not_delay_close() -> None:
    running = await start_stub(config=StubConfig(faults=Faults(hang_rate=1, hang_seconds=30)))
    headers = {"Authorization": "Bearer stub-token"}
    async with httpx.AsyncClient(base_url=running.url, headers=headers) as c:
        request = asyncio.create_task(send(c, 1))
        while running.state.by_outcome["hang"] == 0:
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        await running.close()
        assert time.perf_counter() - started < 2
        assert (await request).status_code == 504


async def test_duplicates(client: httpx.AsyncClient) -> None:
    for msg_id in (1, 2, 1, 1):
        assert (await send(client, msg_id, text=f"t{msg_id}")).json() == OK
    s = await stats(client)
    assert s["delivered_unique"] == 2
    assert s["duplicates"] == 2
    assert s["by_outcome"]["ok"] == 4

    items = (await client.get("/_control/deliveries")).json()["items"]
    assert [(i["id"], i["count"], i["text"]) for i in items] == [(1, 3, "t1"), (2, 1, "t2")]
    assert items[0]["last_at"] >= items[0]["first_at"]
    assert items[0]["last_at"] == s["last_received_at"]


async def test_deliveries_pagination(client: httpx.AsyncClient) -> None:
    ids = [(i * 7) % 25 + 1 for i in range(25)]  # 1..25, out of order
    await asyncio.gather(*(send(client, i) for i in ids))

    seen, after_id, pages = [], None, 0
    while True:
        params = {"limit": 10} | ({"after_id": after_id} if after_id is not None else {})
        page = (await client.get("/_control/deliveries", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        after_id = page["next_after_id"]
        if after_id is None:
            break
    assert seen == list(range(1, 26))
    assert pages == 3

    page = (await client.get("/_control/deliveries", params={"after_id": 0, "limit": 5})).json()
    assert [i["id"] for i in page["items"]] == [1, 2, 3, 4, 5]
    assert page["next_after_id"] == 5
    page = (await client.get("/_control/deliveries", params={"after_id": 25})).json()
    assert page == {"items": [], "next_after_id": None}

    for bad in ({"limit": 0}, {"limit": "x"}, {"after_id": "x"}, {"limit": 10**6}):
        assert (await client.get("/_control/deliveries", params=bad)).status_code == 400


async def test_faults_control(client: httpx.AsyncClient) -> None:
    defaults = (await client.get("/_control/faults")).json()
    assert defaults == {
        "latency_ms": 0.0,
        "jitter_ms": 0.0,
        "error_rate": 0.0,
        "error_status": 500,
        "garbage_rate": 0.0,
        "hang_rate": 0.0,
        "hang_seconds": 3600.0,
        "down": False,
        "status_override": None,
        "retry_after": None,
    }
    merged = await set_faults(client, error_rate=0.25, latency_ms=3)
    assert merged == defaults | {"error_rate": 0.25, "latency_ms": 3}
    assert (await set_faults(client, retry_after=5))["error_rate"] == 0.25
    assert (await client.get("/_control/faults")).json() == merged | {"retry_after": 5}

    for bad in (
        {"nope": 1},
        {"error_rate": 2},
        {"error_rate": 0.6, "garbage_rate": 0.6},
        {"down": "yes"},
        {"latency_ms": -1},
        {"status_override": 42},
        {"error_status": True},
        {"hang_seconds": None},
    ):
        response = await client.put("/_control/faults", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["code"] == 400
    for bad_body in (b"[]", b"not json"):
        response = await client.put("/_control/faults", content=bad_body)
        assert response.status_code == 400
    assert (await client.get("/_control/faults")).json() == merged | {"retry_after": 5}


async def test_reset(client: httpx.AsyncClient) -> None:
    await send(client, 1)
    await client.post("/send/2")
    defaults = await set_faults(client, down=False)
    await set_faults(client, error_rate=0.5, down=True)

    response = await client.post("/_control/reset")
    assert response.status_code == 200
    assert response.json() == defaults
    assert (await client.get("/_control/faults")).json() == defaults
    after_reset = await stats(client)
    assert after_reset.pop("loop_lag_max_s") >= 0  # the stub's own loop, not reset
    assert after_reset == {
        "requests_total": 0,
        "by_outcome": dict.fromkeys(OUTCOMES, 0),
        "delivered_unique": 0,
        "duplicates": 0,
        "first_received_at": None,
        "last_received_at": None,
    }
    assert (await client.get("/_control/deliveries")).json()["items"] == []


async def test_requests_total_counts_every_outcome(client: httpx.AsyncClient) -> None:
    await send(client, 1)
    await client.post("/send/2", json={}, headers={"Authorization": "x"})
    await client.post("/send/3", content=b"{")
    s = await stats(client)
    assert s["requests_total"] == 3 == sum(s["by_outcome"].values())


async def test_seeded_faults_are_reproducible() -> None:
    async def outcomes() -> list[int]:
        config = StubConfig(seed=7, faults=Faults(error_rate=0.3, garbage_rate=0.3))
        running = await start_stub(config=config)
        headers = {"Authorization": "Bearer stub-token"}
        try:
            async with httpx.AsyncClient(base_url=running.url, headers=headers) as c:
                return [(await send(c, i)).text.__hash__() for i in range(1, 41)]
        finally:
            await running.close()

    first = await outcomes()
    assert first == await outcomes()
    assert len(set(first)) > 2


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_TOKEN", "abc")
    monkeypatch.setenv("STUB_SEED", "3")
    monkeypatch.setenv("STUB_FAULTS", '{"latency_ms": 2, "down": true}')
    config = StubConfig.from_env()
    assert config == StubConfig(token="abc", seed=3, faults=Faults(latency_ms=2, down=True))


def test_deliveries_store_interns_texts_and_pages_negative_ids() -> None:
    store = Deliveries()
    for msg_id in (5, -3, 0, 9):
        store.add(msg_id, PHONE, "same " + "text", 1.0)
    assert len({id(t) for t in store.texts}) == 1
    items, next_after_id = store.page(None, 3)
    assert [i["id"] for i in items] == [-3, 0, 5]
    assert next_after_id == 5
    items, next_after_id = store.page(-3, 10)
    assert [i["id"] for i in items] == [0, 5, 9]
    assert next_after_id is None


async def test_token_control_rotates_the_accepted_token(client: httpx.AsyncClient) -> None:
    assert (await send(client, 1)).status_code == 200
    response = await client.put("/_control/token", json={"token": "rotated"})
    assert response.status_code == 200
    assert (await send(client, 2)).status_code == 401  # the old token is refused now
    rotated = {"Authorization": "Bearer rotated"}
    body = {"id": 3, "phone": PHONE, "text": "hello"}
    assert (await client.post("/send/3", json=body, headers=rotated)).status_code == 200
    for bad in ({}, {"token": ""}, {"token": 5}, []):
        assert (await client.put("/_control/token", json=bad)).status_code == 400
    assert (await client.put("/_control/token", content=b"{")).status_code == 400


async def test_stats_since_gives_the_first_acceptance_after_a_moment(
    client: httpx.AsyncClient,
) -> None:
    before = time.time()
    assert (await client.get("/_control/stats", params={"since": before})).json()[
        "first_received_since"
    ] is None
    await send(client, 1)
    middle = time.time()
    await send(client, 2)
    await send(client, 1)  # a repeat counts as an acceptance too
    first = (await client.get("/_control/stats", params={"since": before})).json()
    later = (await client.get("/_control/stats", params={"since": middle})).json()
    assert before <= first["first_received_since"] <= middle < later["first_received_since"]
    assert (await client.get("/_control/stats", params={"since": "x"})).status_code == 400
