import httpx


async def call(api, method, *a, **k):
    try:
        return await api.request(method, *a, **k)
    except Exception as e:

        class R:
            status_code = "EXC"
            text = repr(e)[:150]
            headers = {}

        return R


async def test_probe(api: httpx.AsyncClient) -> None:
    r = await call(
        api, "POST", "/clients", json={"phone": "79123456789", "timezone": "UTC", "tag": "a\x00b"}
    )
    print("NUL tag", r.status_code, r.text[:200])
    r = await call(api, "GET", "/clients", params={"tag": "a\x00b"})
    print("NUL tag query", r.status_code, r.text[:200])
    body = '{"phone": "79123456780", "timezone": "UTC", "tag": "\\ud800"}'
    r = await call(
        api, "POST", "/clients", content=body, headers={"content-type": "application/json"}
    )
    print("surrogate tag", r.status_code, r.text[:200])
    r = await call(
        api,
        "POST",
        "/mailings",
        json={
            "start_at": "0001-01-01T00:00:00+14:00",
            "end_at": "2999-01-01T00:00:00Z",
            "text": "x",
        },
    )
    print("year1", r.status_code, r.text[:200])
    r = await call(
        api,
        "POST",
        "/mailings",
        json={
            "start_at": "2020-01-01T00:00:00Z",
            "end_at": "9999-12-31T23:59:59-14:00",
            "text": "x",
        },
    )
    print("year9999", r.status_code, r.text[:200])
    r = await call(
        api,
        "POST",
        "/mailings",
        json={
            "start_at": "2020-01-01T00:00:00Z",
            "end_at": "2999-12-31T23:59:59Z",
            "text": "x\x00",
        },
    )
    print("NUL text", r.status_code, r.text[:200])

    async def gen():
        for _ in range(300):
            yield b"x" * 1024

    r = await call(
        api, "POST", "/clients", content=gen(), headers={"content-type": "application/json"}
    )
    print("chunked big", r.status_code, r.text[:200])
    r = await call(
        api,
        "POST",
        "/clients",
        content=b"x" * (300 * 1024),
        headers={"content-type": "application/json"},
    )
    print("big", r.status_code, r.text[:200], r.headers)
    r = await call(api, "GET", "/clients", headers={"Authorization": "Basic abc"})
    print("basic", r.status_code, r.text[:200], r.headers)
    r = await call(api, "GET", "/clients/9223372036854775808")
    print("huge", r.status_code, r.text[:300])
    r = await call(
        api,
        "POST",
        "/mailings",
        json={"start_at": "2020-01-01T00:00:00Z", "end_at": "2999-12-31T23:59:59Z", "text": "x"},
        headers={"Idempotency-Key": "a\x00b"},
    )
    print("nul key", r.status_code, r.text[:300])
