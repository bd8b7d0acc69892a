"""Run a command against PostgreSQL and RabbitMQ: the machine's when they let us in, private
ones otherwise. `make run`, `make test` (and the other targets that need servers) go through
here:

    python -m scripts.devservers -- pytest -q

For each server, in order:

1. Given by the user: DATABASE_URL (or TEST_PG_ADMIN_DSN) / AMQP_URL (or TEST_AMQP_URL) in the
   environment always win; nothing is probed or started.
2. The system's, on the usual port (DEV_PG_PROBE_DSN, default postgres@127.0.0.1:5432 with no
   password; DEV_AMQP_PROBE_URL, default guest:guest@127.0.0.1:5672): used when a real login
   succeeds.
3. Otherwise (nothing listens, or it refuses the login) a private server of our own
   (scripts/private_servers.py) under DEV_DATA_DIR (default the git-ignored `.data/`), on free
   ports, kept between runs, and stopped when the command ends, fails or is interrupted.

The system's servers are never started, stopped or reconfigured here: a machine's PostgreSQL
that asks for a password stays as it is. The command gets DATABASE_URL, AMQP_URL and the test
suite's TEST_PG_ADMIN_DSN / TEST_AMQP_URL, all pointing at the same servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from sqlalchemy.engine import make_url

from scripts.private_servers import PrivatePostgres, PrivateRabbitMQ

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "mailing"
SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def say(message: str) -> None:
    print(f"devservers: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Servers:
    """Where the command's database server and broker are."""

    pg_admin_dsn: str  # libpq DSN of the maintenance database ("postgres")
    database_url: str  # SQLAlchemy URL of the service database
    amqp_url: str

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "AMQP_URL": self.amqp_url,
            "TEST_PG_ADMIN_DSN": self.pg_admin_dsn,
            "TEST_AMQP_URL": self.amqp_url,
            # bench/run.py: the broker, and the ports whose server processes it measures.
            "BENCH_AMQP_URL": self.amqp_url,
            "BENCH_PG_PORT": str(make_url(self.database_url).port or 5432),
            "BENCH_AMQP_PORT": str(make_url(_as_url(self.amqp_url)).port or 5672),
        }


def pg_login_error(dsn: str, timeout_s: int = 5) -> str | None:
    """None when `dsn` lets us in, else why not (refused, no such role, a password asked…)."""
    try:
        # libpq never prompts: a server that wants a password we do not have refuses us.
        with psycopg.connect(dsn, connect_timeout=timeout_s) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def amqp_login_error(url: str, timeout_s: float = 10) -> str | None:
    async def login() -> None:
        connection = await aio_pika.connect(url, timeout=timeout_s)
        await connection.close()

    quiet = logging.getLogger("aio_pika")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its own "error when creating transport" line
    try:
        asyncio.run(login())
    except Exception as error:  # refused, access refused, timeout: all mean "not usable"
        return f"{type(error).__name__}: {error}".splitlines()[0]
    finally:
        quiet.setLevel(level)
    return None


def _given_pg(env: dict[str, str]) -> tuple[str, str] | None:
    """(admin DSN, database URL) from what the user set, or None."""
    admin = env.get("TEST_PG_ADMIN_DSN")
    url = env.get("DATABASE_URL")
    if not admin and not url:
        return None
    if url and not admin:
        admin = (
            make_url(url)
            .set(drivername="postgresql", database="postgres")
            .render_as_string(hide_password=False)
        )
    if admin and not url:
        url = (
            make_url(admin)
            .set(drivername="postgresql+psycopg", database=DATABASE)
            .render_as_string(hide_password=False)
        )
    assert admin and url
    return admin, url


def _sqlalchemy_url(admin_dsn: str) -> str:
    return (
        make_url(admin_dsn)
        .set(drivername="postgresql+psycopg", database=DATABASE)
        .render_as_string(hide_password=False)
    )


def _node_name(data_dir: Path) -> str:
    """One stable node name per data directory, so its queues survive a restart."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"mailing-dev-{digest}@localhost"


@contextlib.contextmanager
def servers(env: dict[str, str], data_dir: Path) -> Iterator[Servers]:
    """The servers to use; private ones started here are stopped on the way out."""
    with contextlib.ExitStack() as stack:
        given = _given_pg(env)
        if given:
            admin_dsn, database_url = given
            say("PostgreSQL: as given (DATABASE_URL / TEST_PG_ADMIN_DSN)")
        else:
            probe = env.get("DEV_PG_PROBE_DSN", SYSTEM_PG)
            error = pg_login_error(probe)
            if error is None:
                admin_dsn, database_url = probe, _sqlalchemy_url(probe)
            else:
                say(f"PostgreSQL at {_where(probe)} refuses us ({error}); starting a private one")
                cluster = stack.enter_context(_private_postgres(data_dir / "postgres"))
                admin_dsn, database_url = cluster.dsn(), cluster.sqlalchemy_url(DATABASE)
                say(f"private PostgreSQL on 127.0.0.1:{cluster.port} ({cluster.data})")

        amqp_url = env.get("AMQP_URL") or env.get("TEST_AMQP_URL")
        if amqp_url:
            say("RabbitMQ: as given (AMQP_URL / TEST_AMQP_URL)")
        else:
            probe = env.get("DEV_AMQP_PROBE_URL", SYSTEM_AMQP)
            error = amqp_login_error(probe)
            if error is None:
                amqp_url = probe
            else:
                say(f"RabbitMQ at {_where(probe)} refuses us ({error}); starting a private one")
                node = stack.enter_context(_private_rabbitmq(data_dir / "rabbitmq"))
                amqp_url = node.amqp_url
                say(f"private RabbitMQ {node.node} on 127.0.0.1:{node.port} ({node.base})")
        yield Servers(admin_dsn, database_url, amqp_url)


def _as_url(url: str) -> str:
    """An AMQP URL in a form SQLAlchemy's URL parser reads (host and port are all we need)."""
    return url.replace("amqp://", "postgresql://", 1)


def _where(url: str) -> str:
    parsed = make_url(_as_url(url))
    return f"{parsed.host}:{parsed.port}"


@contextlib.contextmanager
def _private_postgres(base: Path) -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres(base)
    if cluster.running():  # left behind by a run that was killed: stop it, start afresh
        with contextlib.suppress(RuntimeError):
            cluster.stop("fast")
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        yield cluster
    finally:
        say("stopping the private PostgreSQL")
        cluster.close()


@contextlib.contextmanager
def _private_rabbitmq(base: Path) -> Iterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ(base, node=_node_name(base))
    node.stop_leftover()
    try:
        node.start()
        yield node
    finally:
        say("stopping the private RabbitMQ")
        node.close()


def run(command: list[str], env: dict[str, str]) -> int:
    """Run the command in the foreground; Ctrl-C reaches it (it shares our terminal) and we
    wait for it to finish before the servers stop. SIGTERM is passed on."""
    process = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    env = dict(os.environ)
    data_dir = Path(env.get("DEV_DATA_DIR", ROOT / ".data"))
    # SIGTERM (or Ctrl-C) while a private server is starting: stop what started, then leave.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with servers(env, data_dir) as found:
            return run(argv, env | found.env())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
