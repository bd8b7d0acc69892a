"""Property-based run over the OpenAPI spec (schemathesis): valid and invalid requests to every
operation; none may answer 5xx, and every response must match the spec."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from services.api.app import create_app
from services.api.events import NoEvents
from shared.settings import ApiSettings
from tests.api.helpers import insert_clients, insert_mailing, insert_messages, start_mailing
from tests.conftest import ADMIN_TOKEN
from tests.support import database

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# The spec is static: build it from an app that is never started. (schemathesis' lazy
# `from_fixture` loader does not run under this pytest version, so the schema is loaded eagerly
# and the running app is handed to each call.)
schema = schemathesis.openapi.from_dict(create_app(ApiSettings(), events=NoEvents()).openapi())


@pytest.fixture(scope="session")
def schemathesis_app(api_settings: ApiSettings) -> Iterator[object]:
    # Schemathesis drives ASGI apps from its own event-loop thread, so it gets its own app (its
    # engine is made in that loop on the first request) rather than the session's `api_app`.
    app = create_app(api_settings, events=NoEvents())
    yield app
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # runs the app's lifespan exit: disposes of its engine


@pytest.fixture
def seeded(clean_db: str) -> None:
    """A few rows, so generated ids 1, 2 and 3 hit real clients, mailings and messages."""
    with database.connect(clean_db) as conn:
        seed(conn)


def seed(conn: psycopg.Connection) -> None:
    clients = insert_clients(conn, 3, tag="vip")
    scheduled = insert_mailing(conn)
    running = insert_mailing(conn)
    start_mailing(conn, running)
    insert_mailing(conn, status="completed")
    insert_messages(conn, scheduled, clients[:1], "pending")
    insert_messages(conn, running, clients, "sent")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_api_conforms_to_its_spec(
    case: schemathesis.Case, schemathesis_app: object, seeded: None
) -> None:
    case.call_and_validate(
        app=schemathesis_app,
        headers=AUTH,
        checks=[checks.not_a_server_error, checks.response_schema_conformance],
    )
