"""The client directory: create, read, list, update (PATCH/PUT) and soft-delete."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.helpers import (
    assert_error,
    create_client,
    create_mailing,
    insert_clients,
    insert_mailing,
    insert_messages,
    message_statuses,
    phone,
    row_counts,
    unchanged,
)

# --- create ----------------------------------------------------------------------------------


async def test_create_returns_the_client_with_a_derived_operator_code(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    response = await api.post("/clients", json={"phone": "79123456789", "timezone": "Asia/Kolkata"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"] >= 1
    assert body["phone"] == "79123456789"
    assert body["operator_code"] == "912"
    assert body["tag"] == ""
    assert body["timezone"] == "Asia/Kolkata"
    assert body["created_at"] and body["updated_at"]
    assert "deleted_at" not in body
    row = db.execute(
        "SELECT phone, operator_code, tag, timezone, deleted_at FROM client WHERE id = %s",
        (body["id"],),
    ).fetchone()
    assert row == ("79123456789", "912", "", "Asia/Kolkata", None)


async def test_create_with_explicit_operator_code_and_tag(api: httpx.AsyncClient) -> None:
    body = await create_client(api, operator_code="999", tag="vip", timezone="UTC")
    assert (body["operator_code"], body["tag"], body["timezone"]) == ("999", "vip", "UTC")


async def test_read_returns_what_create_returned(api: httpx.AsyncClient) -> None:
    created = await create_client(api, tag="new")
    fetched = await api.get(f"/clients/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


INVALID_CREATES: list[tuple[dict[str, Any], str, str]] = [
    ({"phone": "89123456789", "timezone": "UTC"}, "phone", "7 followed by 10 digits"),
    ({"phone": "+79123456789", "timezone": "UTC"}, "phone", "7 followed by 10 digits"),
    ({"phone": "7912345678", "timezone": "UTC"}, "phone", "7 followed by 10 digits"),
    ({"phone": "791234567890", "timezone": "UTC"}, "phone", "7 followed by 10 digits"),
    ({"phone": "7912345678a", "timezone": "UTC"}, "phone", "7 followed by 10 digits"),
    ({"phone": 79123456789, "timezone": "UTC"}, "phone", "string"),
    ({"timezone": "UTC"}, "phone", "required"),
    ({"phone": "79123456789"}, "timezone", "required"),
    ({"phone": "79123456789", "timezone": "Mars/Base"}, "timezone", "IANA"),
    ({"phone": "79123456789", "timezone": ""}, "timezone", "IANA"),
    ({"phone": "79123456789", "timezone": "europe/moscow"}, "timezone", "IANA"),
    ({"phone": "79123456789", "timezone": "+03:00"}, "timezone", "IANA"),
    (
        {"phone": "79123456789", "timezone": "UTC", "operator_code": "91"},
        "operator_code",
        "3 digits",
    ),
    (
        {"phone": "79123456789", "timezone": "UTC", "operator_code": "9123"},
        "operator_code",
        "3 digits",
    ),
    (
        {"phone": "79123456789", "timezone": "UTC", "operator_code": "abc"},
        "operator_code",
        "3 digits",
    ),
    ({"phone": "79123456789", "timezone": "UTC", "tag": "x" * 101}, "tag", "100"),
    ({"phone": "79123456789", "timezone": "UTC", "tag": "a\x00b"}, "tag", "NUL"),
    ({"phone": "79123456789", "timezone": "UTC", "tag": None}, "tag", "string"),
    ({"phone": "79123456789", "timezone": "UTC", "name": "Ann"}, "name", "not permitted"),
    ({"phone": "79123456789", "timezone": "UTC", "id": 5}, "id", "not permitted"),
]


async def test_invalid_create_is_422_with_a_clear_message_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    await create_client(api, phone=phone(99))  # something to leave untouched
    for body, field, message in INVALID_CREATES:
        with subtests.test(msg=repr(body)[:80]), unchanged(db):
            response = await api.post("/clients", json=body)
            error = assert_error(response, 422, field, message)
            assert any(e["loc"][-1] == field for e in error["errors"]), error


async def test_tag_of_exactly_100_characters_is_accepted(api: httpx.AsyncClient) -> None:
    body = await create_client(api, tag="x" * 100)
    assert body["tag"] == "x" * 100


async def test_malformed_json_is_422(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    for payload in ["not json", "[1, 2]", '"string"', "{", "null", ""]:
        with subtests.test(msg=payload), unchanged(db):
            response = await api.post(
                "/clients", content=payload, headers={"content-type": "application/json"}
            )
            assert_error(response, 422)


async def test_duplicate_phone_is_409_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    await create_client(api, phone="79123456789")
    with unchanged(db):
        response = await api.post(
            "/clients", json={"phone": "79123456789", "timezone": "UTC", "tag": "other"}
        )
    assert_error(response, 409, "79123456789", "already exists")


async def test_deleted_clients_phone_can_be_reused(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    first = await create_client(api, phone="79123456789")
    assert (await api.delete(f"/clients/{first['id']}")).status_code == 204
    second = await create_client(api, phone="79123456789")
    assert second["id"] != first["id"]
    # The history row stays, soft-deleted.
    rows = db.execute(
        "SELECT id, deleted_at IS NOT NULL FROM client WHERE phone = '79123456789' ORDER BY id"
    ).fetchall()
    assert rows == [(first["id"], True), (second["id"], False)]
    # And a second live client with the phone is still refused.
    response = await api.post("/clients", json={"phone": "79123456789", "timezone": "UTC"})
    assert_error(response, 409)


async def test_concurrent_creates_of_one_phone_make_one_client(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    responses = await asyncio.gather(
        *(api.post("/clients", json={"phone": "79123456789", "timezone": "UTC"}) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert row_counts(db)["client"] == 1


# --- read and 404s ---------------------------------------------------------------------------


async def test_unknown_and_deleted_clients_are_404(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    client = await create_client(api)
    assert (await api.delete(f"/clients/{client['id']}")).status_code == 204
    for ident in (client["id"], 12345):
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            body = (
                {"phone": "79123456780", "timezone": "UTC"} if method in ("PATCH", "PUT") else None
            )
            with subtests.test(msg=f"{method} {ident}"), unchanged(db):
                response = await api.request(method, f"/clients/{ident}", json=body)
                assert_error(response, 404, f"client {ident} not found")


async def test_out_of_range_or_malformed_ids_are_422_not_500(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for ident in [str(2**63), str(2**64), "0", "-1", "abc", "1.5"]:
        for method in ("GET", "PATCH", "PUT", "DELETE"):
            with subtests.test(msg=f"{method} {ident}"):
                response = await api.request(
                    method, f"/clients/{ident}", json={} if method in ("PATCH", "PUT") else None
                )
                error = assert_error(response, 422, "client_id")
                assert ["path", "client_id"] in [e["loc"] for e in error["errors"]]


async def test_largest_id_is_a_plain_404(api: httpx.AsyncClient) -> None:
    assert_error(await api.get(f"/clients/{2**63 - 1}"), 404)


# --- list ------------------------------------------------------------------------------------


async def test_list_paginates_with_after_id(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    ids = insert_clients(db, 25)
    seen: list[int] = []
    after_id = 0
    pages = 0
    while True:
        response = await api.get("/clients", params={"limit": 10, "after_id": after_id})
        assert response.status_code == 200
        page = response.json()
        pages += 1
        seen += [c["id"] for c in page["items"]]
        if page["next_after_id"] is None:
            break
        assert page["next_after_id"] == page["items"][-1]["id"]
        after_id = page["next_after_id"]
    assert pages == 3
    assert seen == ids  # every client once, in id order
    assert [len(p) for p in (seen[:10], seen[10:20], seen[20:])] == [10, 10, 5]


async def test_a_full_last_page_is_followed_by_an_empty_one(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    ids = insert_clients(db, 10)
    page = (await api.get("/clients", params={"limit": 10})).json()
    assert page["next_after_id"] == ids[-1]
    last = (await api.get("/clients", params={"limit": 10, "after_id": ids[-1]})).json()
    assert last == {"items": [], "next_after_id": None}


async def test_list_skips_deleted_clients(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    ids = insert_clients(db, 5)
    assert (await api.delete(f"/clients/{ids[1]}")).status_code == 204
    assert (await api.delete(f"/clients/{ids[3]}")).status_code == 204
    page = (await api.get("/clients")).json()
    assert [c["id"] for c in page["items"]] == [ids[0], ids[2], ids[4]]
    assert page["next_after_id"] is None


async def test_list_filters(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    a = await create_client(api, phone="79120000001", tag="vip")
    b = await create_client(api, phone="79160000002", tag="vip")
    c = await create_client(api, phone="79160000003", tag="")
    d = await create_client(api, phone="79120000004", tag="new", operator_code="916")

    async def ids(**params: Any) -> list[int]:
        response = await api.get("/clients", params=params)
        assert response.status_code == 200, response.text
        return [x["id"] for x in response.json()["items"]]

    assert await ids(operator_code="912") == [a["id"]]
    assert await ids(operator_code="916") == [b["id"], c["id"], d["id"]]
    assert await ids(tag="vip") == [a["id"], b["id"]]
    assert await ids(tag="") == [c["id"]]
    assert await ids(operator_code="916", tag="vip") == [b["id"]]
    assert await ids(phone="79120000004") == [d["id"]]
    assert await ids(phone="79999999999") == []
    assert await ids(tag="VIP") == []


async def test_invalid_list_parameters_are_422(
    api: httpx.AsyncClient, subtests: pytest.Subtests
) -> None:
    for params in [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"after_id": -1},
        {"after_id": 2**63},
        {"operator_code": "12"},
        {"phone": "123"},
        {"tag": "x" * 101},
        {"tag": "a\x00b"},
    ]:
        (field,) = params
        with subtests.test(msg=repr(params)[:60]):
            assert_error(await api.get("/clients", params=params), 422, field)


async def test_limit_bounds_are_accepted(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    insert_clients(db, 3)
    one = (await api.get("/clients", params={"limit": 1})).json()
    assert len(one["items"]) == 1
    assert one["next_after_id"] == one["items"][0]["id"]
    most = (await api.get("/clients", params={"limit": 1000})).json()
    assert len(most["items"]) == 3
    assert most["next_after_id"] is None


# --- update: PATCH vs PUT --------------------------------------------------------------------


async def test_patch_changes_only_the_given_fields(api: httpx.AsyncClient) -> None:
    client = await create_client(api, phone="79123456789", tag="vip", timezone="Europe/Moscow")
    response = await api.patch(f"/clients/{client['id']}", json={"tag": "gold"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tag"] == "gold"
    for field in ("phone", "operator_code", "timezone", "created_at"):
        assert body[field] == client[field]
    assert body["updated_at"] >= client["updated_at"]
    assert (await api.get(f"/clients/{client['id']}")).json() == body


async def test_patch_phone_keeps_the_operator_code(api: httpx.AsyncClient) -> None:
    client = await create_client(api, phone="79123456789")
    body = (await api.patch(f"/clients/{client['id']}", json={"phone": "79161234567"})).json()
    assert (body["phone"], body["operator_code"]) == ("79161234567", "912")


async def test_patch_with_nulls_leaves_fields_alone(api: httpx.AsyncClient) -> None:
    client = await create_client(api, tag="vip", operator_code="950")
    response = await api.patch(
        f"/clients/{client['id']}",
        json={"tag": None, "operator_code": None, "phone": None, "timezone": None},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tag"], body["operator_code"]) == ("vip", "950")


async def test_empty_patch_is_a_no_op(api: httpx.AsyncClient) -> None:
    client = await create_client(api, tag="vip")
    body = (await api.patch(f"/clients/{client['id']}", json={})).json()
    assert {k: v for k, v in body.items() if k != "updated_at"} == {
        k: v for k, v in client.items() if k != "updated_at"
    }


async def test_put_replaces_every_field_and_rederives_the_operator_code(
    api: httpx.AsyncClient,
) -> None:
    client = await create_client(api, phone="79123456789", tag="vip", operator_code="950")
    response = await api.put(
        f"/clients/{client['id']}", json={"phone": "79161234567", "timezone": "Asia/Kolkata"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == client["id"]
    assert body["phone"] == "79161234567"
    assert body["operator_code"] == "916"  # derived from the new phone
    assert body["tag"] == ""  # a missing tag resets to the default
    assert body["timezone"] == "Asia/Kolkata"
    assert body["created_at"] == client["created_at"]


async def test_put_with_an_explicit_operator_code(api: httpx.AsyncClient) -> None:
    client = await create_client(api)
    body = (
        await api.put(
            f"/clients/{client['id']}",
            json={"phone": "79161234567", "timezone": "UTC", "operator_code": "123", "tag": "t"},
        )
    ).json()
    assert (body["operator_code"], body["tag"]) == ("123", "t")


INVALID_PUTS: list[tuple[dict[str, Any], str]] = [
    ({"timezone": "UTC"}, "phone"),  # PUT needs every required field
    ({"phone": "79161234567"}, "timezone"),
    ({"phone": "89161234567", "timezone": "UTC"}, "phone"),
    ({"phone": "79161234567", "timezone": "Nowhere/City"}, "timezone"),
    ({"phone": "79161234567", "timezone": "UTC", "operator_code": "1"}, "operator_code"),
    ({"phone": "79161234567", "timezone": "UTC", "extra": 1}, "extra"),
]
INVALID_PATCHES: list[tuple[dict[str, Any], str]] = [
    ({"phone": "12345"}, "phone"),
    ({"operator_code": "1234"}, "operator_code"),
    ({"timezone": "Moscow"}, "timezone"),
    ({"tag": "x" * 101}, "tag"),
    ({"tag": "\x00"}, "tag"),
    ({"deleted_at": None}, "deleted_at"),
    ({"id": 99}, "id"),
]


async def test_invalid_put_and_patch_are_422_and_change_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    client = await create_client(api)
    cases = [("PUT", *c) for c in INVALID_PUTS] + [("PATCH", *c) for c in INVALID_PATCHES]
    for method, body, field in cases:
        with subtests.test(msg=f"{method} {body!r}"[:80]), unchanged(db):
            response = await api.request(method, f"/clients/{client['id']}", json=body)
            assert_error(response, 422, field)
    assert (await api.get(f"/clients/{client['id']}")).json() == client


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_update_to_another_clients_phone_is_409_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, method: str
) -> None:
    await create_client(api, phone="79123456789")
    other = await create_client(api, phone="79160000000", tag="keep")
    with unchanged(db):
        response = await api.request(
            method, f"/clients/{other['id']}", json={"phone": "79123456789", "timezone": "UTC"}
        )
    assert_error(response, 409, "79123456789")
    assert (await api.get(f"/clients/{other['id']}")).json() == other


async def test_update_to_own_phone_or_a_deleted_clients_phone_is_fine(
    api: httpx.AsyncClient,
) -> None:
    gone = await create_client(api, phone="79123456789")
    assert (await api.delete(f"/clients/{gone['id']}")).status_code == 204
    client = await create_client(api, phone="79160000000")
    same = await api.patch(f"/clients/{client['id']}", json={"phone": "79160000000"})
    assert same.status_code == 200
    reused = await api.put(
        f"/clients/{client['id']}", json={"phone": "79123456789", "timezone": "UTC"}
    )
    assert reused.status_code == 200, reused.text
    assert reused.json()["phone"] == "79123456789"


# --- delete ----------------------------------------------------------------------------------


async def test_delete_is_soft_and_then_404(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    client = await create_client(api)
    response = await api.delete(f"/clients/{client['id']}")
    assert response.status_code == 204
    assert response.content == b""
    row = db.execute("SELECT deleted_at IS NOT NULL FROM client WHERE id = %s", (client["id"],))
    assert row.fetchone() == (True,)
    assert_error(await api.delete(f"/clients/{client['id']}"), 404)
    assert_error(await api.get(f"/clients/{client['id']}"), 404)


async def test_delete_cancels_the_clients_open_messages_only(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    gone, stays = insert_clients(db, 2)
    statuses = ["pending", "queued", "sending", "retrying", "sent", "failed", "expired"]
    mailings = [insert_mailing(db, status="running") for _ in statuses]
    mine = [insert_messages(db, m, [gone], s)[0] for m, s in zip(mailings, statuses, strict=True)]
    theirs = [insert_messages(db, m, [stays], "pending")[0] for m in mailings]

    assert (await api.delete(f"/clients/{gone}")).status_code == 204

    assert message_statuses(db, mine) == [
        "cancelled",
        "cancelled",
        "cancelled",
        "cancelled",
        "sent",
        "failed",
        "expired",
    ]
    assert message_statuses(db, theirs) == ["pending"] * len(mailings)
    cleared = db.execute(
        "SELECT count(*) FROM message WHERE id = ANY(%s) AND (token IS NOT NULL"
        " OR lease_until IS NOT NULL)",
        (mine[:4],),
    ).fetchone()
    assert cleared == (0,)


async def test_delete_leaves_a_message_being_sent_to_its_sender(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """A request under way may be delivered; the sender records the outcome."""
    (client_id,) = insert_clients(db, 1)
    mailing = insert_mailing(db, status="running")
    (message_id,) = insert_messages(db, mailing, [client_id], "sending")
    db.execute(
        "UPDATE message SET token = 7, lease_until = now() + interval '1 minute' WHERE id = %s",
        (message_id,),
    )
    assert (await api.delete(f"/clients/{client_id}")).status_code == 204
    assert message_statuses(db, [message_id]) == ["sending"]


async def test_a_client_with_history_can_be_deleted_and_its_mailing_still_counts_it(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    (client_id,) = insert_clients(db, 1)
    mailing = await create_mailing(api)
    insert_messages(db, mailing["id"], [client_id], "sent")
    assert (await api.delete(f"/clients/{client_id}")).status_code == 204
    stats = (await api.get(f"/mailings/{mailing['id']}/stats")).json()
    assert stats["counts"]["sent"] == 1
    assert stats["total"] == 1


async def test_tags_with_quotes_and_sql_are_stored_and_filtered_literally(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    tags = ["x'); DROP TABLE client; --", "a\"b'c", "%", "_", "\\", "' OR '1'='1", "ёлка 🎄", "x"]
    ids = {
        tag: (await create_client(api, phone=phone(n), tag=tag))["id"] for n, tag in enumerate(tags)
    }
    for tag, ident in ids.items():
        with subtests.test(msg=tag):
            assert (await api.get(f"/clients/{ident}")).json()["tag"] == tag
            page = (await api.get("/clients", params={"tag": tag})).json()
            assert [c["id"] for c in page["items"]] == [ident]
    assert row_counts(db)["client"] == len(tags)  # the table is still there


# --- phones as people write them ------------------------------------------------------------


async def test_the_strict_phone_format_holds_unless_normalisation_is_asked(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = {"phone": "+7 (916) 123-45-67", "timezone": "UTC"}
    with unchanged(db):
        response = await api.post("/clients", json=body)
        assert_error(response, 422, "phone", "phone must be 7 followed by 10 digits")
    response = await api.post("/clients", json=body, params={"normalize_phone": "true"})
    assert response.status_code == 201, response.text
    assert (response.json()["phone"], response.json()["operator_code"]) == ("79161234567", "916")


@pytest.mark.parametrize("written", ["+7 (916) 123-45-67", "8 916 123 45 67", "89161234567"])
async def test_put_and_patch_normalise_when_asked(api: httpx.AsyncClient, written: str) -> None:
    client = await create_client(api)
    asked = {"normalize_phone": "true"}
    patched = await api.patch(f"/clients/{client['id']}", json={"phone": written}, params=asked)
    assert patched.status_code == 200, patched.text
    assert patched.json()["phone"] == "79161234567"
    put = await api.put(
        f"/clients/{client['id']}", json={"phone": written, "timezone": "UTC"}, params=asked
    )
    assert put.status_code == 200 and put.json()["phone"] == "79161234567", put.text
    # Without the parameter the next request is strict again.
    strict = await api.patch(f"/clients/{client['id']}", json={"phone": written})
    assert_error(strict, 422, "phone", "phone must be 7 followed by 10 digits")


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("916 123 45 67", "10 digits without a country code are ambiguous"),
        ("+1 916 123 45 67", "a phone with + must be +7 followed by 10 digits"),
        ("8 916 123 45 6", "phone must be 7 or 8 followed by 10 digits"),
    ],
)
async def test_ambiguous_phones_are_refused_with_the_reason(
    api: httpx.AsyncClient, db: psycopg.Connection, written: str, reason: str
) -> None:
    with unchanged(db):
        response = await api.post(
            "/clients",
            json={"phone": written, "timezone": "UTC"},
            params={"normalize_phone": "true"},
        )
        assert_error(response, 422, "phone", reason)
