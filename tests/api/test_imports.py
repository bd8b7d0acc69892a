"""CSV import of clients: good, bad and repeated rows in both conflict modes, the rules shared
with POST /clients, idempotency, size limit, and an import that fails changing nothing."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api.app import create_app
from tests.api.helpers import assert_error, insert_clients, insert_mailing, insert_messages, phone
from tests.conftest import ADMIN_TOKEN
from tests.support import database
from tests.support.waiting import wait_until

HEADER = "phone,tag,timezone,operator_code,opted_out\n"


async def finished(api: httpx.AsyncClient, import_id: int) -> dict[str, Any]:
    """The import once it is no longer running (its progress as a client polls it)."""

    async def done() -> dict[str, Any] | None:
        body = (await api.get(f"/clients/imports/{import_id}")).json()
        return body if body["status"] != "running" else None

    return await wait_until(done, timeout=60, message=f"import {import_id} to finish")


async def run_import(api: httpx.AsyncClient, csv: str, **params: str) -> dict[str, Any]:
    response = await api.post(
        "/clients/imports",
        content=csv.encode(),
        headers={"Content-Type": "text/csv"},
        params=params,
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/api/v1/clients/imports/{response.json()['id']}"
    return await finished(api, response.json()["id"])


def clients(db: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = db.execute(
        "SELECT phone, operator_code, tag, timezone, opted_out_at IS NOT NULL FROM client"
        " WHERE deleted_at IS NULL"
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


MIXED = (
    HEADER
    + "79120000001,vip,Europe/Moscow,,\n"  # line 2: new
    + "79120000002,,UTC,999,yes\n"  # line 3: new, own operator code, opted out
    + "8912000000,x,UTC,,\n"  # line 4: bad phone
    + "79120000001,other,UTC,,\n"  # line 5: repeats line 2
    + "79120000003,x,Mars/Olympus,,\n"  # line 6: bad timezone
    + "79120000004,x,UTC,12,\n"  # line 7: bad operator code
    + "79120000005,"
    + "t" * 101
    + ",UTC,,\n"  # line 8: tag too long
    + "79120000006,x,UTC,,maybe\n"  # line 9: bad opted_out
    + "79120000007,x\n"  # line 10: too few fields
    + '79120000008,"two\nlines",UTC,,\n'  # lines 11-12: a quoted newline
    + "79120000009,old,UTC,,\n"  # line 13: exists already
)
MIXED_REJECTIONS = [
    {
        "line": 4,
        "field": "phone",
        "reason": "phone must be 7 or 8 followed by 10 digits, e.g. 8 912 345-67-89",
    },
    {"line": 5, "field": "phone", "reason": "duplicate of line 2"},
    {
        "line": 6,
        "field": "timezone",
        "reason": "timezone must be an IANA time zone name, e.g. Europe/Moscow",
    },
    {
        "line": 7,
        "field": "operator_code",
        "reason": "operator_code must be exactly 3 digits, e.g. 912",
    },
    {"line": 8, "field": "tag", "reason": "tag must be at most 100 characters"},
    {
        "line": 9,
        "field": "opted_out",
        "reason": "opted_out must be true or false (or 1/0, yes/no), or empty to leave it as is",
    },
    {"line": 10, "field": None, "reason": "expected 5 fields, found 2"},
]


def seed_existing(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone)"
        " VALUES ('79120000009', '912', 'before', 'Asia/Tokyo')"
    )


async def test_import_skip_mode_keeps_existing_clients_and_explains_each_rejection(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    seed_existing(db)
    result = await run_import(api, MIXED)
    assert result["status"] == "done", result
    assert (result["rows"], result["created"], result["updated"], result["skipped"]) == (
        11,
        3,
        0,
        1,
    )
    assert result["rejected"] == 7
    assert result["rejected_rows"] == MIXED_REJECTIONS
    assert clients(db) == {
        "79120000001": ("912", "vip", "Europe/Moscow", False),
        "79120000002": ("999", "", "UTC", True),
        "79120000008": ("912", "two\nlines", "UTC", False),
        "79120000009": ("912", "before", "Asia/Tokyo", False),
    }
    listed = (await api.get("/clients", params={"phone": "79120000002"})).json()["items"][0]
    assert listed["opted_out"] is True and listed["opted_out_at"] is not None
    audit = db.execute(
        "SELECT action, target_type, target_id, changes FROM audit_log"
        " WHERE action = 'import_clients'"
    ).fetchall()
    assert [(a, t, i) for a, t, i, _ in audit] == [
        ("import_clients", "client_import", str(result["id"]))
    ]
    assert audit[0][3]["created"] == 3


async def test_import_update_mode_changes_existing_clients_and_counts_unchanged_as_skipped(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    seed_existing(db)
    db.execute(
        "INSERT INTO client (phone, operator_code, tag, timezone, opted_out_at)"
        " VALUES ('79120000010', '912', 'same', 'UTC', now())"
    )
    csv = MIXED + "79120000010,same,UTC,,\n"  # line 14: unchanged (empty opted_out keeps it)
    result = await run_import(api, csv, on_conflict="update")
    assert result["status"] == "done", result
    assert (result["created"], result["updated"], result["skipped"], result["rejected"]) == (
        3,
        1,
        1,
        7,
    )
    assert clients(db)["79120000009"] == ("912", "old", "UTC", False)
    assert clients(db)["79120000010"] == ("912", "same", "UTC", True)


async def test_import_opting_out_cancels_undelivered_messages(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    [client_id, other] = insert_clients(db, 2)
    mailing = insert_mailing(db, status="running")
    insert_messages(db, mailing, [client_id, other])
    result = await run_import(api, HEADER + f"{phone(0)},,UTC,,true\n", on_conflict="update")
    assert result["updated"] == 1
    rows = db.execute(
        "SELECT client_id, status, last_error FROM message ORDER BY client_id"
    ).fetchall()
    assert rows == [(client_id, "cancelled", "opted out"), (other, "pending", None)]


async def test_the_rules_are_those_of_post_clients(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """Each refused row is refused by POST /clients with the same message, and vice versa
    (with `normalize_phone=true`: the import takes phones as people write them)."""
    rows = [
        ("79123456789", "", "Europe/Moscow", ""),
        ("7912345678", "", "UTC", ""),
        ("79123456780", "", "Europe/Moskva", ""),
        ("79123456781", "", "UTC", "1234"),
        ("79123456782", "x" * 100, "UTC", ""),
        ("79123456783", "x" * 101, "UTC", ""),
        ("79123456784", "", "utc", ""),
        ("8 912 345-67-85", "", "UTC", ""),
        ("912 345 67 86", "", "UTC", ""),
        ("+44 20 7946 0958", "", "UTC", ""),
    ]
    csv = HEADER + "".join(f"{p},{t},{z},{c},\n" for p, t, z, c in rows)
    result = await run_import(api, csv)
    refused = {r["line"] - 2: r for r in result["rejected_rows"]}
    db.execute("TRUNCATE client, client_import CASCADE")
    for n, (p, t, z, c) in enumerate(rows):
        body = {"phone": p, "tag": t, "timezone": z} | ({"operator_code": c} if c else {})
        response = await api.post("/clients", json=body, params={"normalize_phone": "true"})
        if n in refused:
            assert response.status_code == 422, (n, response.text)
            assert refused[n]["reason"] in response.json()["detail"], (n, response.text)
        else:
            assert response.status_code == 201, (n, response.text)


async def test_phones_as_people_write_them_are_normalised_and_counted(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    csv = (
        HEADER
        + '"+7 (916) 123-45-67",a,UTC,,\n'  # line 2: normalised
        + "8 916 123 45 68,b,UTC,,\n"  # line 3: normalised
        + "89161234569,c,UTC,,\n"  # line 4: normalised
        + "79161234560,d,UTC,,\n"  # line 5: as the task writes it
        + "9161234561,e,UTC,,\n"  # line 6: no country code
        + "+44 20 7946 0958,f,UTC,,\n"  # line 7: another country
        + "8-916-123-45-67,g,UTC,,\n"  # line 8: line 2's phone again
        + "8 916 123 45 62,h,Mars/Olympus,,\n"  # line 9: normalisable, bad zone
    )
    result = await run_import(api, csv)
    assert (result["created"], result["rejected"], result["normalized"]) == (4, 4, 3), result
    assert {r["line"]: r["reason"] for r in result["rejected_rows"]} == {
        6: "10 digits without a country code are ambiguous: write 7 or 8 in front",
        7: "a phone with + must be +7 followed by 10 digits",
        8: "duplicate of line 2",
        9: "timezone must be an IANA time zone name, e.g. Europe/Moscow",
    }
    # A rejected row keeps the phone as the file wrote it.
    kept = db.execute("SELECT phone FROM client_import_rejection WHERE line = 8").fetchone()
    assert kept == ("8-916-123-45-67",)
    assert sorted(clients(db)) == ["79161234560", "79161234567", "79161234568", "79161234569"]
    audit = db.execute("SELECT changes FROM audit_log WHERE action = 'import_clients'").fetchone()
    assert audit is not None and audit[0]["normalized"] == 3


async def test_rejected_rows_stream_as_csv(api: httpx.AsyncClient) -> None:
    result = await run_import(api, MIXED)
    response = await api.get(f"/clients/imports/{result['id']}/rejected")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == "line,field,reason,phone,tag,timezone,operator_code,opted_out"
    reason = "phone must be 7 or 8 followed by 10 digits, e.g. 8 912 345-67-89"
    assert lines[1] == f'4,phone,"{reason}",8912000000,x,UTC,,'
    assert len(lines) == 1 + 7


async def test_multipart_upload(api: httpx.AsyncClient, db: psycopg.Connection) -> None:
    response = await api.post(
        "/clients/imports",
        files={"file": ("clients.csv", HEADER + "79120000001,a,UTC,,\n", "text/csv")},
        data={"note": "ignored"},
    )
    assert response.status_code == 202, response.text
    assert (await finished(api, response.json()["id"]))["created"] == 1
    assert list(clients(db)) == ["79120000001"]


async def test_the_same_file_with_one_idempotency_key_imports_once(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    csv = (HEADER + "79120000001,a,UTC,,\n").encode()
    headers = {"Content-Type": "text/csv", "Idempotency-Key": "import-1"}
    first = await api.post("/clients/imports", content=csv, headers=headers)
    await finished(api, first.json()["id"])
    db.execute("DELETE FROM client")  # a second import would create it again
    again = await api.post("/clients/imports", content=csv, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert clients(db) == {}
    other = await api.post(
        "/clients/imports", content=csv + b"79120000002,a,UTC,,\n", headers=headers
    )
    assert_error(other, 422, "Idempotency-Key")
    assert len((await api.get("/clients/imports")).json()["items"]) == 1


@pytest.mark.parametrize(
    ("csv", "fragment"),
    [
        (b"", "empty"),
        (b"phone,timezone\n79120000001,UTC\n", "lacks tag"),
        (b"phone,tag,timezone,colour\n", "unknown column 'colour'"),
        (b"phone,tag,tag,timezone\n", "twice"),
        (b"phone,tag,timezone\n\xff\xfe,x,UTC\n", "not UTF-8"),
        (b'phone,tag,timezone\n79120000001,"open,UTC\n' + b"x\n" * 200, "not closed"),
    ],
)
async def test_an_unreadable_file_is_422_and_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection, csv: bytes, fragment: str
) -> None:
    response = await api.post("/clients/imports", content=csv, headers={"Content-Type": "text/csv"})
    assert_error(response, 422, fragment)
    assert db.execute("SELECT count(*) FROM client_import").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM client").fetchone() == (0,)


async def test_other_media_types_are_415(api: httpx.AsyncClient) -> None:
    response = await api.post("/clients/imports", json={"phone": "79120000001"})
    assert_error(response, 415, "text/csv")


async def test_a_file_over_the_limit_is_413(api_settings: Any, db: psycopg.Connection) -> None:
    limit = 64 * 1024
    app = create_app(api_settings.model_copy(update={"import_max_bytes": limit}))
    body = HEADER.encode() + b"79120000001,a,UTC,,\n" * (limit // 20 + 1)

    async def chunks() -> Any:  # no Content-Length: the limit holds on the stream too
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    headers = {"Content-Type": "text/csv"}
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t/api/v1", headers=auth
        ) as client:
            streamed = await client.post("/clients/imports", content=chunks(), headers=headers)
            declared = await client.post("/clients/imports", content=body, headers=headers)
            fits = await client.post("/clients/imports", content=body[:limit], headers=headers)
            assert fits.status_code == 202, fits.text  # far over the 256 KiB of other bodies
            fitted = await finished(client, fits.json()["id"])
    assert_error(streamed, 413, str(limit))
    assert_error(declared, 413, str(limit))
    # Only the import that fitted exists: the refused uploads left nothing behind.
    assert db.execute("SELECT id FROM client_import").fetchall() == [(fitted["id"],)]
    assert fitted["created"] == 1 and fitted["rejected"] == fitted["rows"] - 1


async def test_a_failing_import_changes_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """The upsert fails half way (a trigger refuses the 3rd new client): the import is
    `failed`, and neither its clients, its rejected rows nor an audit entry remain."""
    db.execute("""
        CREATE FUNCTION refuse_third() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.phone = '79120000003' THEN RAISE EXCEPTION 'refused for the test'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_third BEFORE INSERT ON client FOR EACH ROW
            EXECUTE FUNCTION refuse_third();
    """)
    try:
        csv = HEADER + "".join(f"7912000000{n},,UTC,,\n" for n in range(1, 6)) + "bad,,UTC,,\n"
        result = await run_import(api, csv)
    finally:
        db.execute("DROP TRIGGER refuse_third ON client; DROP FUNCTION refuse_third()")
    assert result["status"] == "failed"
    assert "nothing was changed" in result["error"]
    assert result["rejected_rows"] == []
    assert db.execute("SELECT count(*) FROM client").fetchone() == (0,)
    assert db.execute(
        "SELECT count(*) FROM audit_log WHERE action = 'import_clients'"
    ).fetchone() == (0,)


csv_alphabet = st.sampled_from([*'7912,"\n\r\x00 ;abc\ufeffé', "UTC", "phone", "tag", "timezone"])
csv_texts = st.lists(csv_alphabet, max_size=60).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.one_of(
        csv_texts.map(lambda t: ("phone,tag,timezone\n" + t).encode()),
        csv_texts.map(str.encode),
        st.binary(max_size=80),
    )
)
async def test_any_body_is_imported_or_refused_never_a_server_error(
    api: httpx.AsyncClient, body: bytes
) -> None:
    response = await api.post(
        "/clients/imports", content=body, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code in (202, 422), response.text
    if response.status_code == 202:
        result = await finished(api, response.json()["id"])
        assert result["status"] == "done", result
        assert result["created"] + result["skipped"] + result["rejected"] == result["rows"]


async def test_imports_take_turns_writing_the_directory(
    api: httpx.AsyncClient, db: psycopg.Connection, clean_db: str
) -> None:
    """Two imports over the same phones in opposite orders used to deadlock (PostgreSQL ended
    one). They now write one at a time: while another import holds the turn (here the test's
    own connection), an import waits for it, then finishes."""
    phones = [phone(i) for i in range(100)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO client (phone, operator_code, tag, timezone)"
            " VALUES (%s, '912', '', 'UTC')",
            [(p,) for p in phones],
        )
    body = HEADER + "".join(f"{p},b,UTC,,yes\n" for p in reversed(phones))
    with database.connect(clean_db) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('client_import'))")
        response = await api.post(
            "/clients/imports",
            content=body.encode(),
            headers={"Content-Type": "text/csv"},
            params={"on_conflict": "update"},
        )
        assert response.status_code == 202, response.text

        async def waiting_for_its_turn() -> bool:
            row = db.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            return bool(row and row[0])

        await wait_until(waiting_for_its_turn, timeout=30, message="the import to wait its turn")
        status = (await api.get(f"/clients/imports/{response.json()['id']}")).json()["status"]
        assert status == "running"
        assert {clients(db)[p] for p in phones} == {("912", "", "UTC", False)}
        other.execute("SELECT pg_advisory_unlock(hashtext('client_import'))")  # its turn now
    result = await finished(api, response.json()["id"])
    assert (result["status"], result["updated"]) == ("done", 100), result
    assert {clients(db)[p] for p in phones} == {("912", "b", "UTC", True)}
