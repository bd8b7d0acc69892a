from __future__ import annotations

import httpx


async def test_create_and_read_client(api: httpx.AsyncClient) -> None:
    created = await api.post("/clients", json={"phone": "79123456789", "timezone": "Europe/Moscow"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["operator_code"] == "912"
    fetched = await api.get(f"/clients/{body['id']}")
    assert fetched.json() == body
