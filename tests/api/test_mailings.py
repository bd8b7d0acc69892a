"""Mailings: create (idempotently), read, list, change within the rules, pause/resume, delete,
preview, and their messages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.helpers import (
    assert_error,
    create_client,
    create_mailing,
    in_hours,
    insert_clients,
    insert_mailing,
    insert_messages,
    iso,
    mailing_body,
    phone,
    row_counts,
    set_mailing,
    start_mailing,
    unchanged,
)

# --- create ----------------------------------------------------------------------------------


async def test_create_returns_the_mailing(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    start, end = in_hours(1), in_hours(5)
    response = await api.post(
        "/mailings", json={"start_at": iso(start), "end_at": iso(end), "text": "Hello"}
    )
    assert response.status_code == 201, response.text
    assert "Idempotent-Replayed" not in response.headers
    body = response.json()
    assert body["id"] >= 1
    assert datetime.fromisoformat(body["start_at"]) == start
    assert datetime.fromisoformat(body["end_at"]) == end
    assert body["text"] == "Hello"
    assert body["text_info"] == {"encoding": "GSM-7", "length": 5, "segments": 1}
    assert body["filter"] == {"operator_codes": [], "tags": []}
    assert body["send_window"] is None
    assert body["status"] == "scheduled"
    assert body["started_at"] is None and body["completed_at"] is None
    # Create answers the pre-send check too; a read does not.
    check = body.pop("check")
    assert check["recipients"] == {"matching": 0, "opted_out": 0, "over_cap": 0, "final": 0}
    assert (await api.get(f"/mailings/{body['id']}")).json() == body
    assert row_counts(db)["mailing"] == 1


async def test_create_with_filter_and_send_window(api: httpx.AsyncClient) -> None:
    body = await create_mailing(
        api,
        filter={"operator_codes": ["912", "916"], "tags": ["vip", ""]},
        send_window={"start": "22:00", "end": "06:30"},
    )
    assert body["filter"] == {"operator_codes": ["912", "916"], "tags": ["vip", ""]}
    assert body["send_window"] == {"start": "22:00", "end": "06:30"}


async def test_create_with_other_offsets_keeps_the_instant(api: httpx.AsyncClient) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    end = start + timedelta(hours=3)
    kolkata = timezone(timedelta(hours=5, minutes=30))
    body = await create_mailing(
        api,
        start_at=start.astimezone(kolkata).isoformat(),
        end_at=end.isoformat().replace("+00:00", "Z"),
    )
    assert body["start_at"].endswith(("Z", "+00:00"))  # returned in UTC
    assert datetime.fromisoformat(body["start_at"]) == start
    assert datetime.fromisoformat(body["end_at"]) == end


async def test_a_start_in_the_past_is_allowed(api: httpx.AsyncClient) -> None:
    body = await create_mailing(api, start_at=iso(in_hours(-2)))
    assert body["status"] == "scheduled"


TEXT_INFO = [
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("{}" * 40, "GSM-7", 160, 1),  # extension characters count two septets
    ("€" * 81, "GSM-7", 162, 2),
    ("Привет", "UCS-2", 6, 1),
    ("Я" * 71, "UCS-2", 71, 2),
    ("🙂" * 35, "UCS-2", 70, 1),
    ("x" * 1000, "GSM-7", 1000, 7),
    ("Я" * 1000, "UCS-2", 1000, 15),
]


async def test_create_reports_text_info(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for text, encoding, length, segments in TEXT_INFO:
        with subtests.test(msg=f"{text[:12]}... ({len(text)})"):
            body = await create_mailing(api, text=text)
            assert body["text"] == text
            assert body["text_info"] == {
                "encoding": encoding,
                "length": length,
                "segments": segments,
            }


NAIVE = datetime.now().replace(microsecond=0) + timedelta(days=1)
FIVE = in_hours(5)

INVALID_CREATES: list[tuple[dict[str, Any], str, str]] = [
    ({"start_at": NAIVE.isoformat()}, "start_at", "timezone"),
    ({"end_at": (NAIVE + timedelta(days=1)).isoformat()}, "end_at", "timezone"),
    ({"start_at": "tomorrow"}, "start_at", "datetime"),
    ({"start_at": None}, "start_at", ""),
    ({"end_at": "0001-01-01T00:00:00+14:00"}, "end_at", "between"),
    ({"end_at": "9999-12-31T23:59:59-14:00"}, "end_at", "between"),
    ({"start_at": iso(FIVE), "end_at": iso(FIVE)}, "end_at", "after start_at"),
    (
        {"start_at": iso(FIVE + timedelta(seconds=1)), "end_at": iso(FIVE)},
        "end_at",
        "after start_at",
    ),
    ({"start_at": iso(in_hours(-5)), "end_at": iso(in_hours(-1))}, "end_at", "in the future"),
    ({"text": ""}, "text", "at least 1"),
    ({"text": "   \n\t "}, "text", "blank"),
    ({"text": "x" * 1001}, "text", "1000"),
    ({"text": "a\x00b"}, "text", "NUL"),
    ({"text": 5}, "text", "string"),
    ({"color": "red"}, "color", "not permitted"),
    ({"status": "running"}, "status", "not permitted"),
    ({"filter": {"operator_codes": ["91"]}}, "operator_codes", "3 digits"),
    ({"filter": {"operator_codes": "912"}}, "operator_codes", "list"),
    ({"filter": {"tags": ["x" * 101]}}, "tags", "100"),
    ({"filter": {"tags": [f"t{i}" for i in range(101)]}}, "tags", "100"),
    ({"filter": {"tag": ["vip"]}}, "filter.tag", "not permitted"),
    ({"filter": {"operator_code": ["912"]}}, "operator_code", "not permitted"),
    ({"filter": ["912"]}, "filter", ""),
    ({"send_window": {"start": "9:00", "end": "21:00"}}, "send_window", "HH:MM"),
    ({"send_window": {"start": "09:00", "end": "24:00"}}, "send_window", "HH:MM"),
    ({"send_window": {"start": "12:60", "end": "21:00"}}, "send_window", "HH:MM"),
    ({"send_window": {"start": "09:00:00", "end": "21:00"}}, "send_window", "HH:MM"),
    ({"send_window": {"start": "09:00", "end": "09:00"}}, "send_window", "differ"),
    ({"send_window": {"start": "09:00"}}, "send_window.end", "required"),
    ({"send_window": {"start": "09:00", "end": "21:00", "tz": "UTC"}}, "tz", "not permitted"),
    ({"send_window": "09:00-21:00"}, "send_window", ""),
]


async def test_invalid_create_is_422_with_a_clear_message_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    await create_mailing(api)  # something to leave untouched
    for overrides, field, message in INVALID_CREATES:
        with subtests.test(msg=repr(overrides)[:80]), unchanged(db):
            response = await api.post("/mailings", json=mailing_body(**overrides))
            assert_error(response, 422, field, message)
    for missing in ("start_at", "end_at", "text"):
        body = mailing_body()
        del body[missing]
        with subtests.test(msg=f"without {missing}"), unchanged(db):
            response = await api.post("/mailings", json=body)
            assert_error(response, 422, missing, "required")


async def test_body_over_256_kib_is_413_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    big = mailing_body(text="x" * (300 * 1024))
    with unchanged(db):
        response = await api.post("/mailings", json=big)
    assert_error(response, 413, "request body over 262144 bytes")


async def test_body_over_the_limit_without_content_length_is_413(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    async def chunks() -> Any:
        for _ in range(300):
            yield b" " * 1024  # whitespace: valid JSON padding, just too much of it

    with unchanged(db):
        response = await api.post(
            "/clients", content=chunks(), headers={"content-type": "application/json"}
        )
    assert_error(response, 413, "request body over")


async def test_body_just_under_the_limit_is_read(api: httpx.AsyncClient) -> None:
    body = b'{"phone": "79123456789", "timezone": "UTC"}'
    padded = body + b" " * (256 * 1024 - len(body))
    response = await api.post(
        "/clients", content=padded, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


# --- idempotency -----------------------------------------------------------------------------


async def test_same_key_and_body_replays_the_first_mailing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = mailing_body()
    first = await api.post("/mailings", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    second = await api.post("/mailings", json=body, headers={"Idempotency-Key": "k-1"})
    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert row_counts(db)["mailing"] == 1


async def test_same_key_with_a_different_body_is_422(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = mailing_body()
    first = await api.post("/mailings", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    with unchanged(db):
        response = await api.post(
            "/mailings", json=body | {"text": "other"}, headers={"Idempotency-Key": "k-1"}
        )
    assert_error(response, 422, "Idempotency-Key", "different request body")


async def test_different_keys_and_no_key_make_new_mailings(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = mailing_body()
    a = await api.post("/mailings", json=body, headers={"Idempotency-Key": "a"})
    b = await api.post("/mailings", json=body, headers={"Idempotency-Key": "b"})
    c = await api.post("/mailings", json=body)
    d = await api.post("/mailings", json=body)
    assert len({r.json()["id"] for r in (a, b, c, d)}) == 4
    assert row_counts(db)["mailing"] == 4


async def test_concurrent_creates_with_one_key_make_one_mailing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = mailing_body()
    responses = await asyncio.gather(
        *(api.post("/mailings", json=body, headers={"Idempotency-Key": "race"}) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [201] * 5, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 4
    assert row_counts(db)["mailing"] == 1


async def test_key_of_a_deleted_mailing_is_409(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    body = mailing_body()
    first = await api.post("/mailings", json=body, headers={"Idempotency-Key": "k"})
    assert (await api.delete(f"/mailings/{first.json()['id']}")).status_code == 204
    with unchanged(db):
        response = await api.post("/mailings", json=body, headers={"Idempotency-Key": "k"})
    assert_error(response, 409, "deleted")


async def test_invalid_keys_are_422(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    for key in ("", "k" * 256, "a\x00b"):
        with unchanged(db):
            response = await api.post(
                "/mailings", json=mailing_body(), headers={"Idempotency-Key": key}
            )
        assert_error(response, 422, "idempotency-key")
    longest = await api.post(
        "/mailings", json=mailing_body(), headers={"Idempotency-Key": "k" * 255}
    )
    assert longest.status_code == 201


# --- read, list, 404s ------------------------------------------------------------------------


async def test_list_with_status_filter_and_pagination(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    ids = [(await create_mailing(api))["id"] for _ in range(5)]
    start_mailing(db, ids[1])
    start_mailing(db, ids[3])
    assert (await api.delete(f"/mailings/{ids[4]}")).status_code == 204

    page = (await api.get("/mailings", params={"limit": 2})).json()
    assert [m["id"] for m in page["items"]] == ids[:2]
    assert page["next_after_id"] == ids[1]
    page = (await api.get("/mailings", params={"limit": 2, "after_id": ids[1]})).json()
    assert [m["id"] for m in page["items"]] == ids[2:4]
    page = (await api.get("/mailings", params={"limit": 2, "after_id": ids[3]})).json()
    assert page == {"items": [], "next_after_id": None}  # the deleted one is not listed

    running = (await api.get("/mailings", params={"status": "running"})).json()
    assert [m["id"] for m in running["items"]] == [ids[1], ids[3]]
    scheduled = (await api.get("/mailings", params={"status": "scheduled"})).json()
    assert [m["id"] for m in scheduled["items"]] == [ids[0], ids[2]]
    cancelled = (await api.get("/mailings", params={"status": "cancelled"})).json()
    assert cancelled["items"] == []


async def test_invalid_list_parameters_are_422(api: httpx.AsyncClient) -> None:
    for params in [{"status": "bogus"}, {"limit": 0}, {"limit": 1001}, {"after_id": -1}]:
        assert_error(await api.get("/mailings", params=params), 422, next(iter(params)))


MAILING_ROUTES = [
    ("GET", ""),
    ("PATCH", ""),
    ("DELETE", ""),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("GET", "/stats"),
    ("GET", "/messages"),
]


async def test_unknown_and_deleted_mailings_are_404(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    mailing = await create_mailing(api)
    assert (await api.delete(f"/mailings/{mailing['id']}")).status_code == 204
    for ident in (mailing["id"], 999_999):
        for method, suffix in MAILING_ROUTES:
            with subtests.test(msg=f"{method} {ident}{suffix}"), unchanged(db):
                response = await api.request(
                    method, f"/mailings/{ident}{suffix}", json={} if method == "PATCH" else None
                )
                assert_error(response, 404, f"mailing {ident} not found")


async def test_out_of_range_ids_are_422(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for ident in (str(2**63), "0", "-5", "x"):
        for method, suffix in MAILING_ROUTES:
            with subtests.test(msg=f"{method} {ident}{suffix}"):
                response = await api.request(
                    method, f"/mailings/{ident}{suffix}", json={} if method == "PATCH" else None
                )
                assert_error(response, 422, "mailing_id")


# --- update ----------------------------------------------------------------------------------


async def test_before_start_everything_may_change(api: httpx.AsyncClient) -> None:
    mailing = await create_mailing(api)
    start, end = in_hours(3), in_hours(30)
    response = await api.patch(
        f"/mailings/{mailing['id']}",
        json={
            "start_at": iso(start),
            "end_at": iso(end),
            "text": "Привет",
            "filter": {"operator_codes": ["912"], "tags": ["vip"]},
            "send_window": {"start": "09:00", "end": "21:00"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert datetime.fromisoformat(body["start_at"]) == start
    assert datetime.fromisoformat(body["end_at"]) == end
    assert body["text"] == "Привет"
    assert body["text_info"] == {"encoding": "UCS-2", "length": 6, "segments": 1}
    assert body["filter"] == {"operator_codes": ["912"], "tags": ["vip"]}
    assert body["send_window"] == {"start": "09:00", "end": "21:00"}
    assert body["status"] == "scheduled"
    assert body.pop("check")["text"] == {"encoding": "UCS-2", "segments": 1, "total_segments": 0}
    assert (await api.get(f"/mailings/{mailing['id']}")).json() == body


async def test_patch_changes_only_the_given_fields(api: httpx.AsyncClient) -> None:
    mailing = await create_mailing(
        api, filter={"tags": ["vip"]}, send_window={"start": "09:00", "end": "21:00"}
    )
    body = (await api.patch(f"/mailings/{mailing['id']}", json={"text": "New"})).json()
    assert body["text"] == "New"
    for field in ("start_at", "end_at", "filter", "send_window", "status", "created_at"):
        assert body[field] == mailing[field]


async def test_null_send_window_removes_it_and_null_filter_matches_everyone(
    api: httpx.AsyncClient,
) -> None:
    mailing = await create_mailing(
        api, filter={"tags": ["vip"]}, send_window={"start": "09:00", "end": "21:00"}
    )
    body = (
        await api.patch(f"/mailings/{mailing['id']}", json={"send_window": None, "filter": None})
    ).json()
    assert body["send_window"] is None
    assert body["filter"] == {"operator_codes": [], "tags": []}


FIXED_AFTER_START: list[dict[str, Any]] = [
    {"start_at": iso(in_hours(2))},
    {"filter": {"operator_codes": ["912"]}},
    {"filter": None},
    {"send_window": {"start": "10:00", "end": "11:00"}},
    {"send_window": None},
    {"text": "ok", "start_at": iso(in_hours(2))},  # one fixed field spoils the request
]


@pytest.mark.parametrize("status", ["running", "paused"])
async def test_after_start_start_filter_and_window_are_fixed(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests, status: str
) -> None:
    mailing = await create_mailing(
        api, filter={"tags": ["vip"]}, send_window={"start": "09:00", "end": "21:00"}
    )
    start_mailing(db, mailing["id"], status=status)
    for change in FIXED_AFTER_START:
        with subtests.test(msg=repr(change)[:80]), unchanged(db):
            response = await api.patch(f"/mailings/{mailing['id']}", json=change)
            assert_error(response, 409, "has started", next(k for k in change if k != "text"))


@pytest.mark.parametrize("status", ["running", "paused"])
async def test_after_start_text_and_end_may_change(
    api: httpx.AsyncClient, db: psycopg.Connection, status: str
) -> None:
    mailing = await create_mailing(api)
    start_mailing(db, mailing["id"], status=status)
    end = in_hours(48)
    response = await api.patch(
        f"/mailings/{mailing['id']}", json={"text": "Updated 🙂", "end_at": iso(end)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == "Updated 🙂"
    assert body["text_info"]["encoding"] == "UCS-2"
    assert datetime.fromisoformat(body["end_at"]) == end
    assert body["status"] == status
    assert body["started_at"] is not None
    row = db.execute("SELECT text FROM mailing WHERE id = %s", (mailing["id"],)).fetchone()
    assert row == ("Updated 🙂",)


async def test_a_completed_mailing_cannot_change(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    start_mailing(db, mailing["id"], status="completed")
    with unchanged(db):
        response = await api.patch(f"/mailings/{mailing['id']}", json={"text": "late"})
    assert_error(response, 409, "completed")


INVALID_PATCHES: list[tuple[dict[str, Any], str, str]] = [
    ({"end_at": iso(in_hours(0.5))}, "end_at", "after start_at"),  # before the current start
    ({"start_at": iso(in_hours(30))}, "end_at", "after start_at"),  # after the current end
    (
        {"start_at": iso(in_hours(-3)), "end_at": iso(in_hours(-1))},
        "end_at",
        "in the future",
    ),
    ({"end_at": NAIVE.isoformat()}, "end_at", "timezone"),
    ({"text": ""}, "text", "at least 1"),
    ({"text": " "}, "text", "blank"),
    ({"text": "x" * 1001}, "text", "1000"),
    ({"status": "running"}, "status", "not permitted"),
    ({"started_at": None}, "started_at", "not permitted"),
    ({"filter": {"tagz": []}}, "tagz", "not permitted"),
    ({"send_window": {"start": "21:00", "end": "21:00"}}, "send_window", "differ"),
    ({"send_window": {"start": "9:00", "end": "21:00"}}, "send_window", "HH:MM"),
]


async def test_invalid_patch_is_422_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, subtests: pytest.Subtests
) -> None:
    mailing = await create_mailing(api)
    for change, field, message in INVALID_PATCHES:
        with subtests.test(msg=repr(change)[:80]), unchanged(db):
            response = await api.patch(f"/mailings/{mailing['id']}", json=change)
            assert_error(response, 422, field, message)
    assert (await api.get(f"/mailings/{mailing['id']}")).json() == mailing


async def test_running_mailing_end_may_not_move_into_the_past(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api, start_at=iso(in_hours(-2)))
    start_mailing(db, mailing["id"])
    with unchanged(db):
        response = await api.patch(f"/mailings/{mailing['id']}", json={"end_at": iso(in_hours(-1))})
    assert_error(response, 422, "end_at must be in the future")


# --- pause / resume --------------------------------------------------------------------------


async def test_pause_and_resume_before_start(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    paused = await api.post(f"/mailings/{mailing['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    again = await api.post(f"/mailings/{mailing['id']}/pause")
    assert again.json()["status"] == "paused"  # pausing twice is harmless
    resumed = await api.post(f"/mailings/{mailing['id']}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "scheduled"
    row = db.execute("SELECT status FROM mailing WHERE id = %s", (mailing["id"],)).fetchone()
    assert row == ("scheduled",)


async def test_pause_and_resume_after_start(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    mailing = await create_mailing(api)
    start_mailing(db, mailing["id"])
    assert (await api.post(f"/mailings/{mailing['id']}/pause")).json()["status"] == "paused"
    row = db.execute("SELECT status FROM mailing WHERE id = %s", (mailing["id"],)).fetchone()
    assert row == ("paused",)
    assert (await api.post(f"/mailings/{mailing['id']}/resume")).json()["status"] == "running"


async def test_resume_of_a_live_mailing_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    with unchanged(db):
        response = await api.post(f"/mailings/{mailing['id']}/resume")
    assert response.status_code == 200
    assert response.json()["status"] == "scheduled"


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_a_completed_mailing_cannot_pause_or_resume(
    api: httpx.AsyncClient, db: psycopg.Connection, action: str
) -> None:
    mailing = await create_mailing(api)
    set_mailing(
        db, mailing["id"], status="completed", started_at="sql:now()", completed_at="sql:now()"
    )
    with unchanged(db):
        response = await api.post(f"/mailings/{mailing['id']}/{action}")
    assert_error(response, 409, "completed")


# --- delete ----------------------------------------------------------------------------------


async def test_delete_cancels_and_hides_the_mailing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    start_mailing(db, mailing["id"])
    response = await api.delete(f"/mailings/{mailing['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await api.get(f"/mailings/{mailing['id']}"), 404)
    row = db.execute(
        "SELECT status, deleted_at IS NOT NULL FROM mailing WHERE id = %s", (mailing["id"],)
    ).fetchone()
    assert row == ("cancelled", True)
    assert_error(await api.delete(f"/mailings/{mailing['id']}"), 404)


async def test_delete_of_a_completed_mailing_keeps_its_status(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    mailing = await create_mailing(api)
    set_mailing(db, mailing["id"], status="completed", started_at="sql:now()")
    assert (await api.delete(f"/mailings/{mailing['id']}")).status_code == 204
    row = db.execute(
        "SELECT status, deleted_at IS NOT NULL FROM mailing WHERE id = %s", (mailing["id"],)
    ).fetchone()
    assert row == ("completed", True)


# --- preview ---------------------------------------------------------------------------------


@pytest.fixture
async def directory(api: httpx.AsyncClient) -> dict[str, int]:
    """Five live clients and a deleted one with every combination that matters."""
    ids = {}
    for name, number, code, tag in [
        ("a", 1, "912", "vip"),
        ("b", 2, "912", ""),
        ("c", 3, "916", "vip"),
        ("d", 4, "916", "new"),
        ("e", 5, "950", "vip"),
        ("gone", 6, "912", "vip"),
    ]:
        ids[name] = (await create_client(api, phone=phone(number), operator_code=code, tag=tag))[
            "id"
        ]
    assert (await api.delete(f"/clients/{ids['gone']}")).status_code == 204
    return ids


PREVIEWS: list[tuple[dict[str, Any], int]] = [
    ({}, 5),
    ({"operator_codes": [], "tags": []}, 5),
    ({"operator_codes": ["912"]}, 2),
    ({"operator_codes": ["912", "916"]}, 4),
    ({"tags": ["vip"]}, 3),
    ({"tags": [""]}, 1),
    ({"tags": ["vip", "new"]}, 4),
    ({"operator_codes": ["912"], "tags": ["vip"]}, 1),
    ({"operator_codes": ["916"], "tags": ["vip", "new"]}, 2),
    ({"operator_codes": ["000"]}, 0),
    ({"tags": ["VIP"]}, 0),
]


async def test_preview_counts_matching_live_clients(
    api: httpx.AsyncClient,
    db: psycopg.Connection,
    subtests: pytest.Subtests,
    directory: dict[str, int],
) -> None:
    for mailing_filter, expected in PREVIEWS:
        with subtests.test(msg=repr(mailing_filter)), unchanged(db):
            response = await api.post("/mailings/preview", json={"filter": mailing_filter})
            assert response.status_code == 200, response.text
            assert response.json()["matching_clients"] == expected
            assert response.json()["recipients"]["final"] == expected


async def test_preview_without_a_filter_counts_everyone(
    api: httpx.AsyncClient, directory: dict[str, int]
) -> None:
    assert (await api.post("/mailings/preview", json={})).json()["matching_clients"] == 5


async def test_invalid_preview_is_422(api: httpx.AsyncClient, subtests: pytest.Subtests) -> None:
    for body, field in [
        ({"filter": {"operator_codes": ["9"]}}, "operator_codes"),
        ({"filter": {"tags": "vip"}}, "tags"),
        ({"filter": {"tags": ["\x00"]}}, "tags"),
        ({"filter": {"city": ["x"]}}, "city"),
        ({"filters": {}}, "filters"),
    ]:
        with subtests.test(msg=repr(body)):
            assert_error(await api.post("/mailings/preview", json=body), 422, field)


async def test_filter_tag_with_quotes_and_sql_is_stored_and_matched_literally(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    evil = "x'); DROP TABLE client; --"
    target = await create_client(api, phone=phone(1), tag=evil)
    await create_client(api, phone=phone(2), tag="x")
    await create_client(api, phone=phone(3), tag="' OR '1'='1")
    mailing = await create_mailing(api, filter={"tags": [evil, "%"]})
    assert mailing["filter"]["tags"] == [evil, "%"]
    assert (await api.get(f"/mailings/{mailing['id']}")).json()["filter"]["tags"] == [evil, "%"]
    row = db.execute("SELECT filter_tags FROM mailing WHERE id = %s", (mailing["id"],)).fetchone()
    assert row == ([evil, "%"],)
    preview = await api.post("/mailings/preview", json={"filter": {"tags": [evil]}})
    assert preview.json()["matching_clients"] == 1
    assert (await api.get("/clients", params={"tag": evil})).json()["items"][0]["id"] == target[
        "id"
    ]
    assert row_counts(db)["client"] == 3


# --- messages --------------------------------------------------------------------------------


async def test_messages_list_with_status_filter_and_pagination(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    clients = insert_clients(db, 12)
    mailing = await create_mailing(api)
    other = insert_mailing(db, status="running")
    pending = insert_messages(db, mailing["id"], clients[:5], "pending")
    sent = insert_messages(db, mailing["id"], clients[5:9], "sent")
    failed = insert_messages(db, mailing["id"], clients[9:], "failed")
    insert_messages(db, other, clients, "sent")  # another mailing's messages stay out
    db.execute(
        "UPDATE message SET attempts = 3, last_error = 'HTTP 400' WHERE id = ANY(%s)", (failed,)
    )

    seen: list[int] = []
    after_id = 0
    while True:
        response = await api.get(
            f"/mailings/{mailing['id']}/messages", params={"limit": 5, "after_id": after_id}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [m["id"] for m in page["items"]]
        if page["next_after_id"] is None:
            break
        after_id = page["next_after_id"]
    assert seen == sorted(pending + sent + failed)

    only_sent = (
        await api.get(f"/mailings/{mailing['id']}/messages", params={"status": "sent"})
    ).json()
    assert [m["id"] for m in only_sent["items"]] == sent
    assert {m["status"] for m in only_sent["items"]} == {"sent"}
    only_failed = (
        await api.get(f"/mailings/{mailing['id']}/messages", params={"status": "failed"})
    ).json()
    item = only_failed["items"][0]
    assert item["client_id"] == clients[9]
    assert (item["attempts"], item["last_error"]) == (3, "HTTP 400")
    assert set(item) == {
        "id",
        "client_id",
        "status",
        "attempts",
        "last_error",
        "not_before",
        "created_at",
        "queued_at",
        "sent_at",
        "updated_at",
        "provider",
        "provider_message_id",
    }
    none = (
        await api.get(f"/mailings/{mailing['id']}/messages", params={"status": "expired"})
    ).json()
    assert none == {"items": [], "next_after_id": None}


async def test_invalid_messages_parameters_are_422(api: httpx.AsyncClient) -> None:
    mailing = await create_mailing(api)
    for params in [{"status": "read"}, {"limit": 0}, {"limit": 5000}, {"after_id": "x"}]:
        response = await api.get(f"/mailings/{mailing['id']}/messages", params=params)
        assert_error(response, 422, next(iter(params)))
