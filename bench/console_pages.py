"""The console's pages with 1,000 mailings and a million clients: each page's answer time.

    python -m bench.console_pages             # 1,000,000 clients (seeding takes a minute)
    python -m bench.console_pages --clients 50000

A fresh database of its own (dropped at the end): 1,000 mailings (one running with 200,000
messages in every status, the rest finished with counters), a million clients, 100,000
audit entries, an import with 1,000 rejected rows. The api app (console mounted, as
create_app builds it) is driven in-process over httpx with a real session row; each page is
asked 5 times after one warm-up, and the median and the slowest are printed as a Markdown
table (docs/CONSOLE.md keeps the last run). tests/ui/test_page_queries.py holds the reason
they stay fast: no page's plan scans `message` or `client`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
from asgi_lifespan import LifespanManager

from services.api.app import create_app
from services.api.events import NoEvents
from services.api.principal import Role
from services.api.ui.auth import store
from services.api.ui.deps import SESSION_COOKIE
from shared.settings import ApiSettings
from tests.support import database
from tests.support.broker import AMQP_URL
from tests.support.rig.data import seed_clients

BASE_URL = "http://console.bench"


def seed(name: str, clients: int) -> dict[str, int]:
    with database.connect(name) as conn:
        started = time.monotonic()
        seed_clients(conn, clients, tag="vip", tagged=clients // 10, timezone="Europe/Moscow")
        conn.execute(
            "INSERT INTO mailing (start_at, end_at, text, status, started_at, completed_at)"
            " SELECT now() - make_interval(days => g), now() - make_interval(days => g) + interval"
            " '1 day', 'Offer number ' || g, 'completed', now() - make_interval(days => g),"
            " now() - make_interval(days => g) + interval '2 hours'"
            " FROM generate_series(1, 999) AS g"
        )
        running = conn.execute(
            "INSERT INTO mailing (start_at, end_at, text, status, started_at, send_window_start,"
            " send_window_end) VALUES (now() - interval '1 hour', now() + interval '1 day',"
            " 'Скидка 20%%', 'running', now() - interval '1 hour', '09:00', '21:00') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO message (mailing_id, client_id, status, attempts, not_before)"
            " SELECT %s, id, (ARRAY['sent','sent','sent','failed','retrying','pending','queued'])"
            "[1 + id %% 7]::text, id %% 3, now() + interval '3 minutes'"
            " FROM client WHERE id <= 200000",
            [running],
        )
        conn.execute(
            "INSERT INTO audit_log (at, actor_name, actor_kind, actor_role, action, target_type,"
            " target_id) SELECT now() - make_interval(secs => g), 'ops-' || (g % 7), 'token',"
            " 'admin', (ARRAY['create','update','pause','resume'])[1 + g % 4], 'mailing',"
            " (g % 1000)::text FROM generate_series(1, 100000) AS g"
        )
        imported = conn.execute(
            "INSERT INTO client_import (status, on_conflict, fingerprint, bytes, rows, rejected)"
            " VALUES ('done', 'skip', 'bench', 1000000, 20000, 1000) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO client_import_rejection (import_id, line, field, reason, phone)"
            " SELECT %s, g, 'phone', 'bad phone', '8' || g FROM generate_series(2, 1001) AS g",
            [imported],
        )
        conn.execute("VACUUM ANALYZE")
        print(f"seeded in {time.monotonic() - started:.0f} s", flush=True)
        client = conn.execute("SELECT max(id) FROM client").fetchone()[0]  # type: ignore[index]
    return {"running": running, "import": imported, "client": client}


def pages(ids: dict[str, int]) -> list[str]:
    return [
        "/ui/",
        "/ui/dashboard/live",
        "/ui/dashboard/rate.json",
        "/ui/mailings",
        "/ui/mailings?status=running",
        "/ui/mailings?q=Offer%20number%2077",
        "/ui/mailings?cursor=500",
        f"/ui/mailings/{ids['running']}",
        f"/ui/mailings/{ids['running']}/live",
        f"/ui/mailings/{ids['running']}?msg_status=pending",
        f"/ui/mailings/{ids['running']}?msg_after=150000",
        f"/ui/mailings/{ids['running']}/edit",
        "/ui/mailings-preview?operator_codes=900&tags=vip",
        "/ui/mailings-preview?operator_codes=&tags=",
        "/ui/clients",
        "/ui/clients?tag=vip",
        "/ui/clients?phone=79000500000",
        f"/ui/clients?after={ids['client'] - 100}",
        f"/ui/clients/{ids['client']}",
        "/ui/imports",
        f"/ui/imports/{ids['import']}",
        "/ui/audit",
        "/ui/audit?actor=ops-3&action=pause",
        f"/ui/audit?before={50000}",
    ]


async def measure(name: str, ids: dict[str, int], repeats: int) -> list[tuple[str, float, float]]:
    settings = ApiSettings(
        database_url=database.sqlalchemy_url(name),
        amqp_url=AMQP_URL,
        amqp_namespace="bench-console",
        oidc_issuer="http://127.0.0.1:1",
        oidc_client_id="console",
        ui_base_url=BASE_URL,
        db_pool_size=3,
    )
    app = create_app(settings, events=NoEvents())
    rows = []
    async with LifespanManager(app):
        async with app.state.session_factory() as db:
            token, _user = await store.create(
                db,
                store.Identity(subject="bench", login="bench", name="Bench", email=""),
                Role.ADMIN,
                id_token=None,
                lifetimes=store.Lifetimes(idle=timedelta(hours=1), absolute=timedelta(hours=2)),
                now=datetime.now(UTC),
            )
            await db.commit()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE_URL,
            cookies={SESSION_COOKIE: token},
            timeout=60,
        ) as client:
            for path in pages(ids):
                assert (await client.get(path)).status_code == 200, path  # warm-up
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, path
                rows.append((path, statistics.median(times), max(times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    name = database.create_database("mailing_bench_console")
    try:
        database.migrate(name)
        ids = seed(name, args.clients)
        rows = asyncio.run(measure(name, ids, args.repeats))
    finally:
        database.drop_database(name)
    load = os.getloadavg()[0]
    print(f"\n{args.clients:,} clients, 1,000 mailings, 200,000 messages; load {load:.1f}\n")
    print("| page | median ms | slowest ms |\n| --- | ---: | ---: |")
    for path, median, slowest in rows:
        print(f"| `{path}` | {median:.0f} | {slowest:.0f} |")


if __name__ == "__main__":
    main()
