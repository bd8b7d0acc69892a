"""Security: every admin endpoint refuses a missing or wrong token; no token ever reaches a log;
filter values with quotes and SQL in them are stored and matched literally by the fan-out."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.chaos.rig import API_TOKEN, PROVIDER_TOKEN, open_rig
from tests.chaos.test_bad_input import snapshot

pytestmark = pytest.mark.pipeline

WRONG_TOKEN = "chaos-wrong-token-7f3a9c"
BAD_AUTHORIZATIONS = [
    None,  # no header at all
    "",
    "Bearer",
    f"Bearer {WRONG_TOKEN}",
    f"Bearer {API_TOKEN}x",
    f"Bearer {API_TOKEN[:-1]}",
    f"Bearer {API_TOKEN.upper()}",
    f"Basic {API_TOKEN}",
    f"Token {API_TOKEN}",
    API_TOKEN,  # no scheme
    f"Bearer{API_TOKEN}",
]

NASTY_TAGS = [
    "x'); DROP TABLE client; --",
    "' OR '1'='1",
    '"; DELETE FROM message; --',
    "Robert'); DROP TABLE mailing;--",
    "$$; SELECT pg_sleep(10); $$",
    "%",
    "_",
    "\\",
    "x' UNION SELECT id FROM client --",
    "{x,y}",  # an array literal, if anything spliced it into text[] syntax
]


def _admin_operations() -> list[tuple[str, str]]:
    spec = create_app(ApiSettings(), events=NoEvents()).openapi()
    # The gateway's receipt callbacks take no token: their URL's signature proves them
    # (tests/api/test_receipts.py refuses forged ones with 403).
    operations = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1")
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
        and operation.get("x-required-role") != "none"
    ]
    assert len(operations) >= 17, operations
    return operations


async def test_every_admin_endpoint_refuses_a_missing_or_wrong_token(
    servers: dict[str, Any],
) -> None:
    # Hundreds of wrong tokens from one address: past the failed-authentication limit, which
    # tests/security checks on its own.
    async with open_rig(
        "security: 401 on every admin endpoint", auth_failures_per_minute=1_000_000, **servers
    ) as rig:
        rig.seed_clients(5000)
        mailing = await rig.create_mailing(starts_in=86400, ends_in=2 * 86400)
        ids = {"client_id": "1", "mailing_id": str(mailing["id"])}
        operations = _admin_operations()
        before = snapshot(rig)
        checked = 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rig.api_port}") as anon:
            for method, template in operations:
                path = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "1"), template)
                for authorization in BAD_AUTHORIZATIONS:
                    headers = {} if authorization is None else {"Authorization": authorization}
                    body = {"text": "pwned", "tag": "pwned"} if method != "GET" else None
                    response = await anon.request(method, path, headers=headers, json=body)
                    assert response.status_code == 401, (method, path, authorization, response)
                    assert response.json()["detail"], response.text
                    checked += 1
            # The right token does get in: the 401s above are about the token, nothing else.
            ok = await anon.get("/api/v1/clients", headers={"Authorization": f"Bearer {API_TOKEN}"})
            assert ok.status_code == 200
        assert snapshot(rig) == before, "a refused request changed the database"
        logs = "\n".join(rig.all_logs().values())
        assert WRONG_TOKEN not in logs, "a presented token was logged"
        rig.finish(operations=len(operations), refused_requests=checked)


async def test_sql_in_filter_values_is_matched_literally(servers: dict[str, Any]) -> None:
    plain = 5000
    # DEBUG: the most talkative logs must not leak a token either.
    async with open_rig(
        "security: SQL in tags, tokens in logs", **servers, log_level="DEBUG"
    ) as rig:
        assert rig.api is not None
        rig.seed_clients(plain, tag="x")  # "x" is a prefix of the first nasty tag
        nasty_clients = {}
        for n, tag in enumerate(NASTY_TAGS):
            response = await rig.api.post(
                "/clients", json={"phone": f"7999{n:07d}", "timezone": "UTC", "tag": tag}
            )
            assert response.status_code == 201, response.text
            stored = (await rig.api.get(f"/clients/{response.json()['id']}")).json()
            assert stored["tag"] == tag, "stored literally"
            nasty_clients[tag] = stored
            listed = (await rig.api.get("/clients", params={"tag": tag})).json()["items"]
            assert [c["id"] for c in listed] == [stored["id"]], f"list filter on {tag!r}"
            preview = await rig.api.post("/mailings/preview", json={"filter": {"tags": [tag]}})
            answer = preview.json()
            assert answer["matching_clients"] == 1, (tag, preview.text)
            assert answer["recipients"]["matching"] == 1, (tag, preview.text)

        await rig.start()
        # A filter value that is also SQL, and the plain tag it starts with.
        target = NASTY_TAGS[0]
        nasty = await rig.create_mailing(tags=[target], text="literal")
        wide = await rig.create_mailing(tags=["x", "%"], text="plain")
        await rig.wait_terminal(nasty["id"], 1)
        await rig.wait_terminal(wide["id"], plain + 1, timeout=120)

        await rig.verify(nasty["id"], matching=1, exclusive=False)
        delivered = [d for d in rig.deliveries().values() if d["text"] == "literal"]
        assert [str(d["phone"]) for d in delivered] == [nasty_clients[target]["phone"]]
        await rig.verify(wide["id"], matching=plain + 1, exclusive=False)
        wide_phones = {str(d["phone"]) for d in rig.deliveries().values() if d["text"] == "plain"}
        assert nasty_clients["%"]["phone"] in wide_phones
        assert not {c["phone"] for t, c in nasty_clients.items() if t != "%"} & wide_phones
        with rig.db() as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename IN ('client', 'mailing', 'message')"
            ).fetchone()
            clients = conn.execute("SELECT count(*) FROM client").fetchone()
        assert tables == (3,) and clients == (plain + len(NASTY_TAGS),)
        logs = "\n".join(rig.all_logs().values())
        for secret in (API_TOKEN, PROVIDER_TOKEN):
            assert secret not in logs
        rig.finish(nasty_tags=len(NASTY_TAGS), log_bytes=len(logs))
