"""Private PostgreSQL and RabbitMQ servers of our own, never the machine's.

Two users: tests that stop and restart a server (tests/chaos: a throwaway one in a temporary
directory, removed by `close()` even when the test fails), and `make run` / `make test` on a
machine whose servers on the usual ports are missing or refuse us (scripts/devservers.py: kept
under the git-ignored `.data/` between runs). Either way a server runs on free ports, with its
own data directory, socket, node name and Erlang cookie, and nothing of the system's (its
configuration files, its clusters, its nodes) is read or changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg


def _default_pg_bin() -> Path:
    """The newest Debian PostgreSQL server binaries (postgresql-NN), or PG_BIN."""
    if "PG_BIN" in os.environ:
        return Path(os.environ["PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
PG_BIN = _default_pg_bin()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this helper started (its own session), then reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


class PrivateRabbitMQ:
    """One RabbitMQ node of our own: `start()`, `stop()` (clean, data kept), `close()`."""

    def __init__(self, base: Path | None = None, node: str | None = None) -> None:
        """A temporary node by default; with `base` (and a stable `node` name) one whose data
        stays there from one start to the next."""
        self.keep = base is not None
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="chaos-rmq-"))
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.node = node or f"chaos-{uuid.uuid4().hex[:8]}@localhost"
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

    def stop_leftover(self) -> None:
        """Stop a node of this name left running by a run that was killed (kept data only)."""
        if self.keep and self.process is None:
            self._ctl("stop", timeout=60)

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
        """Stop whatever is left and remove the directory (unless it was given to keep); safe
        to call more than once."""
        try:
            self.stop(timeout=30)
        except Exception:
            self.kill()
        finally:
            self.kill()
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)


class PrivatePostgres:
    """One PostgreSQL cluster of our own (trust auth), on a free port with its socket in its
    own directory. initdb refuses to run as root, so as root it runs as the `postgres` user."""

    def __init__(self, base: Path | None = None) -> None:
        """A temporary cluster by default; with `base` one that stays there between starts
        (initdb only the first time)."""
        self.keep = base is not None
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.data = self.base / "data"
        self.port = free_port()
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")
        if (self.data / "PG_VERSION").exists():
            return
        try:
            self._run(
                PG_BIN / "initdb",
                "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync",
            )  # fmt: skip
        except BaseException:
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)
            raise

    def _run(self, binary: Path, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self._as_postgres, str(binary), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=self.base,
            # The postmaster must not share the terminal's process group: Ctrl-C goes to the
            # services, and the server is stopped after them.
            start_new_session=True,
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
                self.stop("fast" if self.keep else "immediate")
        finally:
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)
