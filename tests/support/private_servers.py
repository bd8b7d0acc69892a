"""Private, throwaway RabbitMQ and PostgreSQL servers for tests that stop and restart them.

The shared servers on 5672 and 5432 must never be stopped: a test that restarts its broker or
its database starts its own node here, on free ports and in a temporary directory, and always
stops and removes it (`close()`), even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

from tests.support.database import ROOT
from tests.support.processes import free_port

RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this helper started (its own session), then reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class PrivateRabbitMQ:
    """One RabbitMQ node of our own: `start()`, `stop()` (clean, data kept), `close()`."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="chaos-rmq-"))
        self.node = f"chaos-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        (self.base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text("loopback_users.guest = true\n")

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return os.environ | {
            # The Erlang cookie lives in HOME: the server and rabbitmqctl must share it.
            "HOME": str(self.base),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }

    def _ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self._env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = 90) -> float:
        """Start the node (on the same data directory every time); seconds until it is up."""
        started = time.monotonic()
        log = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = started + timeout
        while True:
            # `await_startup` fails at once until the node has registered with epmd.
            left = max(int(deadline - time.monotonic()), 1)
            result = self._ctl("await_startup", "--timeout", str(left), timeout=left + 10)
            if result.returncode == 0 and self.process.poll() is None:
                return time.monotonic() - started
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.kill()
                raise RuntimeError(f"private RabbitMQ did not start: {result.stderr!r}\n{tail}")
            time.sleep(0.3)

    def stop(self, timeout: float = 60) -> None:
        """A clean stop (`rabbitmqctl stop`); the data directory stays for the next start."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._ctl("stop", timeout=timeout)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            _kill_group(self.process)
            self.process = None

    def log_tail(self, lines: int = 30) -> str:
        path = self.base / "server.out"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def close(self) -> None:
        """Stop whatever is left and remove the directory; safe to call more than once."""
        try:
            self.stop(timeout=30)
        except Exception:
            self.kill()
        finally:
            self.kill()
            shutil.rmtree(self.base, ignore_errors=True)


class PrivatePostgres:
    """One PostgreSQL cluster of our own (trust auth), on a free port with its socket in its
    own directory. initdb refuses to run as root, so as root it runs as the `postgres` user."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")
        try:
            self._run(
                PG_BIN / "initdb",
                "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync",
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    def _run(self, binary: Path, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self._as_postgres, str(binary), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=self.base,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{binary.name} {args[:2]} failed: {result.stderr!r}\n{self.log_tail()}"
            )

    def start(self) -> float:
        started = time.monotonic()
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            PG_BIN / "pg_ctl",
            "-D", str(self.data), "-o", options, "-l", str(self.base / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        return time.monotonic() - started

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def log_tail(self, lines: int = 30) -> str:
        path = self.base / "server.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except (FileNotFoundError, PermissionError):
            return ""

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def migrate_url(url: str, revision: str = "head") -> None:
    """`alembic upgrade` against any SQLAlchemy URL (tests.support.database.migrate takes a
    database name on the shared server)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    # Alembic's env.py runs its own event loop; keep it off the caller's thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, config, revision).result()
