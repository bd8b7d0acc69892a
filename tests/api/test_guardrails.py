"""Guardrails of large sends (issue 21): the pre-send check, and approval of mailings over
APPROVAL_THRESHOLD recipients by an admin other than their creator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.app import create_app
from services.scheduler import activation
from shared.settings import ApiSettings
from tests.api.helpers import (
    assert_error,
    in_hours,
    insert_clients,
    iso,
    mailing_body,
    set_mailing,
    unchanged,
)
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN

THRESHOLD = 3


@pytest.fixture(scope="module")
async def guarded_app(api_settings: ApiSettings) -> AsyncIterator[object]:
    app = create_app(api_settings.model_copy(update={"approval_threshold": THRESHOLD}))
    async with LifespanManager(app) as manager:
        yield manager.app


def _client(app: object, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://api.test/api/v1",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.fixture
async def creator(guarded_app: object, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """The admin `token-1`."""
    async with _client(guarded_app, ADMIN_TOKEN) as client:
        yield client


@pytest.fixture
async def approver(guarded_app: object, clean_db: str) -> AsyncIterator[httpx.AsyncClient]:
    """Another admin, `token-2`."""
    async with _client(guarded_app, "second-token") as client:
        yield client


async def _create(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/mailings", json=mailing_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _due(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """What the scheduler's activation starts now."""
    async with sessions() as session:
        return [s.mailing_id for s in await activation.claim_due_mailings(session)]


def _audit(db: psycopg.Connection, mailing_id: int) -> list[tuple[str, str, Any]]:
    return db.execute(
        "SELECT action, actor_name, changes FROM audit_log"
        " WHERE target_type = 'mailing' AND target_id = %s ORDER BY id",
        (str(mailing_id),),
    ).fetchall()


# --- approval --------------------------------------------------------------------------------


async def test_a_large_mailing_waits_for_another_admins_approval(
    creator: httpx.AsyncClient,
    approver: httpx.AsyncClient,
    db: psycopg.Connection,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    insert_clients(db, THRESHOLD + 1)
    mailing = await _create(creator, start_at=iso(in_hours(-1)))  # its start has passed
    assert mailing["status"] == "awaiting_approval"
    assert mailing["created_by"] == "token-1"
    assert mailing["check"]["approval"] == {"threshold": THRESHOLD, "needed": True}
    assert mailing["check"]["recipients"]["final"] == THRESHOLD + 1
    assert await _due(sessions) == []  # not even at its start time

    with unchanged(db):
        own = await creator.post(f"/mailings/{mailing['id']}/approve")
        assert_error(own, 403, "another admin must approve it")
    approved = await approver.post(f"/mailings/{mailing['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "scheduled"
    assert approved.json()["approved_by"] == "token-2"
    # Its start passed while it waited: it starts at once.
    assert await _due(sessions) == [mailing["id"]]
    again = await approver.post(f"/mailings/{mailing['id']}/approve")
    assert_error(again, 409, "only one awaiting approval can be approved")

    actions = [(action, actor) for action, actor, _ in _audit(db, mailing["id"])]
    assert actions == [("create", "token-1"), ("approve", "token-2")]
    created = _audit(db, mailing["id"])[0][2]
    assert (created["status"], created["recipients"]) == ("awaiting_approval", THRESHOLD + 1)


async def test_an_edit_after_approval_needs_approval_again(
    creator: httpx.AsyncClient, approver: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, THRESHOLD + 1)
    mailing = await _create(creator)
    assert (await approver.post(f"/mailings/{mailing['id']}/approve")).status_code == 200
    for change in ({"text": "Другой текст"}, {"end_at": iso(in_hours(30))}):
        edited = await approver.patch(f"/mailings/{mailing['id']}", json=change)
        assert edited.status_code == 200, edited.text
        assert edited.json()["status"] == "awaiting_approval"
        assert edited.json()["approved_by"] is None
        assert edited.json()["check"]["approval"]["needed"] is True
        # The editor did not create it: they may approve it again.
        assert (await approver.post(f"/mailings/{mailing['id']}/approve")).status_code == 200
    update = next(c for a, _, c in _audit(db, mailing["id"]) if a == "update")
    assert update["status"] == {"old": "scheduled", "new": "awaiting_approval"}


async def test_an_edit_under_the_threshold_needs_no_approval(
    creator: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, THRESHOLD + 1, operator_code="916")
    mailing = await _create(creator)
    assert mailing["status"] == "awaiting_approval"
    narrowed = await creator.patch(
        f"/mailings/{mailing['id']}", json={"filter": {"operator_codes": ["912"]}}
    )
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["status"] == "scheduled"
    assert narrowed.json()["check"]["recipients"]["final"] == 0
    small = await _create(creator, filter={"operator_codes": ["912"]})
    assert small["status"] == "scheduled"


async def test_a_mailing_whose_end_passed_while_waiting_must_be_retimed(
    creator: httpx.AsyncClient, approver: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, THRESHOLD + 1)
    mailing = await _create(creator, start_at=iso(in_hours(-3)), end_at=iso(in_hours(1)))
    set_mailing(db, mailing["id"], end_at=in_hours(-1))
    with unchanged(db):
        late = await approver.post(f"/mailings/{mailing['id']}/approve")
        assert_error(late, 409, "end time has passed")
    retimed = await creator.patch(f"/mailings/{mailing['id']}", json={"end_at": iso(in_hours(2))})
    assert retimed.json()["status"] == "awaiting_approval"
    assert (await approver.post(f"/mailings/{mailing['id']}/approve")).status_code == 200


async def test_a_clone_over_the_threshold_waits_too(
    creator: httpx.AsyncClient, approver: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, THRESHOLD + 1)
    mailing = await _create(creator)
    body = {"start_at": iso(in_hours(1)), "end_at": iso(in_hours(2))}
    clone = await approver.post(f"/mailings/{mailing['id']}/clone", json=body)
    assert clone.status_code == 201, clone.text
    assert clone.json()["status"] == "awaiting_approval"
    assert clone.json()["created_by"] == "token-2"
    assert_error(await approver.post(f"/mailings/{clone.json()['id']}/approve"), 403)
    assert (await creator.post(f"/mailings/{clone.json()['id']}/approve")).status_code == 200


async def test_pause_cannot_sidestep_approval(
    creator: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, THRESHOLD + 1)
    mailing = await _create(creator)
    assert_error(await creator.post(f"/mailings/{mailing['id']}/pause"), 409)
    resumed = await creator.post(f"/mailings/{mailing['id']}/resume")
    assert resumed.json()["status"] == "awaiting_approval"


async def test_without_a_threshold_nothing_waits(
    api: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, 10)
    response = await api.post("/mailings", json=mailing_body())
    assert response.json()["status"] == "scheduled"
    assert response.json()["check"]["approval"] == {"threshold": None, "needed": False}
    assert_error(await api.post(f"/mailings/{response.json()['id']}/approve"), 409)


# --- the pre-send check ----------------------------------------------------------------------


async def test_the_check_counts_recipients_text_and_routes_and_changes_nothing(
    creator: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    insert_clients(db, 5, operator_code="916")
    insert_clients(db, 2, first=10, operator_code="912")
    db.execute("UPDATE client SET opted_out_at = now() WHERE operator_code = '916' AND id % 2 = 0")
    opted = db.execute("SELECT count(*) FROM client WHERE opted_out_at IS NOT NULL").fetchone()
    assert opted is not None
    text = "Привет! " * 20  # 160 UTF-16 units: three UCS-2 segments
    body = mailing_body(text=text, filter={"operator_codes": ["916"]})
    with unchanged(db):
        response = await creator.post("/mailings/check", json=body)
    assert response.status_code == 200, response.text
    check = response.json()
    final = 5 - opted[0]
    assert check["recipients"] == {
        "matching": 5,
        "opted_out": opted[0],
        "over_cap": 0,
        "final": final,
    }
    assert check["text"] == {"encoding": "UCS-2", "segments": 3, "total_segments": 3 * final}
    assert check["routes"] == [
        {
            "provider": "default",
            "recipients": final,
            "max_tps": None,
            "finishes_at": None,
            "can_finish": True,
        }
    ]
    assert check["approval"] == {"threshold": THRESHOLD, "needed": final > THRESHOLD}
    # The old path is an alias that also says `matching_clients`.
    preview = (await creator.post("/mailings/preview", json=body)).json()
    assert preview == {**check, "matching_clients": final}
    # A filter alone is enough; the text's part is then left out.
    alone = (await creator.post("/mailings/check", json={"filter": {"tags": ["none"]}})).json()
    assert alone["text"] is None and alone["recipients"]["final"] == 0


async def test_a_bad_check_body_is_422(creator: httpx.AsyncClient) -> None:
    for body, field in [
        ({"start_at": iso(in_hours(2)), "end_at": iso(in_hours(1))}, "end_at"),
        ({"text": ""}, "text"),
        ({"filter": {"operator_codes": ["9"]}}, "operator_codes"),
        ({"send_window": {"start": "25:00", "end": "21:00"}}, "send_window"),
    ]:
        assert_error(await creator.post("/mailings/check", json=body), 422, field)


async def test_a_viewer_may_check(guarded_app: object, clean_db: str) -> None:
    async with _client(guarded_app, VIEWER_TOKEN) as viewer:
        response = await viewer.post("/mailings/check", json={})
        assert response.status_code == 200, response.text
        assert_error(await viewer.post("/mailings/1/approve"), 403)
