"""scripts/devservers.py, which `make run` and `make test` go through: the system's servers
when they let us in, private ones when they are missing or refuse us, and the machine's own
servers and their configuration left exactly as they were.

The "system" here is pointed elsewhere with DEV_PG_PROBE_DSN / DEV_AMQP_PROBE_URL: at the
machine's PostgreSQL with a role it does not know (it refuses us) and at a port where nothing
listens; the private servers live in a temporary DEV_DATA_DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from scripts.devservers import amqp_login_error
from scripts.private_servers import free_port
from tests.support.broker import AMQP_URL
from tests.support.database import ADMIN_DSN, ROOT

# Run by devservers as the developer's command: uses both servers, reports where they were.
CHILD = r"""
import asyncio, json, os, signal, sys, time
import aio_pika, psycopg
from sqlalchemy.engine import make_url

url = make_url(os.environ["DATABASE_URL"])
with psycopg.connect(os.environ["TEST_PG_ADMIN_DSN"].rsplit("/", 1)[0] + "/mailing",
                     autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
    conn.execute("INSERT INTO kept VALUES (1)")
    rows = conn.execute("SELECT count(*) FROM kept").fetchone()[0]

async def broker():
    connection = await aio_pika.connect(os.environ["AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue("devservers-check", durable=True)
asyncio.run(broker())
amqp = make_url(os.environ["AMQP_URL"].replace("amqp://", "postgresql://"))
print(json.dumps({"pg_port": url.port, "amqp_port": amqp.port, "rows": rows,
                  "env": {k: os.environ[k] for k in ("DATABASE_URL", "AMQP_URL",
                          "TEST_PG_ADMIN_DSN", "TEST_AMQP_URL")}}), flush=True)
if sys.argv[1:] == ["wait"]:
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    time.sleep(600)
"""

SYSTEM_CONFIG = [Path("/etc/postgresql"), Path("/etc/rabbitmq")]


def fingerprint() -> dict[str, str]:
    """sha256 of every file under the system servers' configuration directories."""
    found = {}
    for top in SYSTEM_CONFIG:
        for path in sorted(top.rglob("*")) if top.exists() else []:
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_under(directory: Path) -> list[str]:
    """Command lines of the live processes that mention the directory (the private servers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory) in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A DEV_DATA_DIR the `postgres` user can reach (pytest's tmp_path is private to root;
    as root, the private PostgreSQL runs as `postgres`)."""
    top = Path(tempfile.mkdtemp(prefix="devservers-"))
    top.chmod(0o755)
    try:
        yield top / "data"
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def refusing_env(data_dir: Path) -> Iterator[dict[str, str]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "AMQP_URL", "TEST_PG_ADMIN_DSN", "TEST_AMQP_URL"}
    }
    env |= {
        "DEV_DATA_DIR": str(data_dir),
        # The machine's PostgreSQL, as a role it does not have: "refuses us".
        "DEV_PG_PROBE_DSN": ADMIN_DSN.replace("postgres@", "devservers_no_such_role@", 1),
        # Nothing listens there.
        "DEV_AMQP_PROBE_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    }
    before = fingerprint()
    yield env
    assert fingerprint() == before, "the system servers' configuration changed"
    assert not processes_under(data_dir), "a private server outlived its run"


def devservers(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.devservers", "--", sys.executable, "-c", CHILD, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def system_servers_answer() -> None:
    with psycopg.connect(ADMIN_DSN, connect_timeout=5) as conn:
        conn.execute("SELECT 1")
    assert amqp_login_error(AMQP_URL) is None, "the system RabbitMQ stopped"


@pytest.mark.timeout(420)
def test_private_servers_when_the_system_refuses_us(refusing_env: dict[str, str]) -> None:
    data_dir = Path(refusing_env["DEV_DATA_DIR"])
    # 1. Runs to the end: private servers start, the command uses them, they stop after it.
    run = devservers(refusing_env)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    first = json.loads(out)
    assert "refuses us" in err and "starting a private one" in err
    assert "stopping the private PostgreSQL" in err and "stopping the private RabbitMQ" in err
    assert first["rows"] == 1
    assert first["pg_port"] != 5432 and first["amqp_port"] != 5672
    assert first["env"]["TEST_AMQP_URL"] == first["env"]["AMQP_URL"]
    assert (data_dir / "postgres" / "data" / "PG_VERSION").exists()
    assert not listening(first["pg_port"]) and not listening(first["amqp_port"])
    assert not processes_under(data_dir)

    # 2. Ctrl-C (SIGINT to the whole foreground group) while the command runs: the command
    # ends, then the private servers stop. The data stayed from the first run.
    run = devservers(refusing_env, "wait")
    assert run.stdout is not None
    second = json.loads(run.stdout.readline())
    assert second["rows"] == 2, "the private database lost the first run's data"
    assert listening(second["pg_port"]) and listening(second["amqp_port"])
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "stopping the private PostgreSQL" in err and "stopping the private RabbitMQ" in err
    assert not listening(second["pg_port"]) and not listening(second["amqp_port"])
    system_servers_answer()


def test_the_system_servers_when_they_let_us_in(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "AMQP_URL", "TEST_PG_ADMIN_DSN", "TEST_AMQP_URL"}
    }
    env |= {
        "DEV_DATA_DIR": str(tmp_path / "data"),
        "DEV_PG_PROBE_DSN": ADMIN_DSN,
        "DEV_AMQP_PROBE_URL": AMQP_URL,
    }
    result = subprocess.run(
        [sys.executable, "-m", "scripts.devservers", "--", "env"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert seen["TEST_PG_ADMIN_DSN"] == ADMIN_DSN
    assert seen["AMQP_URL"] == AMQP_URL
    assert "private" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_given_urls_win(tmp_path: Path) -> None:
    """DATABASE_URL and AMQP_URL from the user: used as they are, even when nothing answers
    there (the command will say so itself); nothing is probed or started."""
    pg_port, amqp_port = free_port(), free_port()
    env = dict(os.environ) | {
        "DEV_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"postgresql+psycopg://me:secret@127.0.0.1:{pg_port}/mine",
        "AMQP_URL": f"amqp://me:secret@127.0.0.1:{amqp_port}/vhost",
    }
    env.pop("TEST_PG_ADMIN_DSN", None)
    env.pop("TEST_AMQP_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "scripts.devservers", "--", "env"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert seen["DATABASE_URL"] == env["DATABASE_URL"]
    assert seen["TEST_PG_ADMIN_DSN"] == f"postgresql://me:secret@127.0.0.1:{pg_port}/postgres"
    assert seen["AMQP_URL"] == seen["TEST_AMQP_URL"] == env["AMQP_URL"]
    assert "as given" in result.stderr and "private" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_the_script_no_longer_touches_the_system() -> None:
    """ensure-services.sh installs packages only: no pg_hba.conf edits, no starting or
    reloading the machine's servers."""
    script = (ROOT / "scripts/ensure-services.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    for forbidden in ("pg_hba", "pg_ctlcluster", "rabbitmq-server -detached", "sed -i", "reload"):
        assert forbidden not in code, forbidden
    for package in ("postgresql", "rabbitmq-server", "prometheus"):
        assert f"apt_install {package}" in code or f"recommends {package}" in code, package
