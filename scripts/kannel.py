"""Kannel (Debian's `kannel` package) in front of an SMPP SMSC, for `make run` and the tests.

`kannel_config()` writes a bearerbox + smsbox configuration: one SMPP transceiver to the SMSC
(our simulator, scripts/smsc-sim), smsbox's sendsms on its own port with one sendsms-user
allowed long texts (`max-messages`, `concatenation = true`: without them smsbox silently cuts a
text to one SMS), receipts awaited kept in a sqlite3 file and queued messages in a spool under
the state directory (both survive a restart), each receipt reported to its message's dlr-url.
`running_kannel()` starts both boxes (on free ports, or the given ones) and stops them.

    python -m scripts.kannel --smsc-port 2775   # prints the ports; Ctrl-C stops it
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Kannel's sqlite3 DLR storage does not create its table.
DLR_TABLE = """CREATE TABLE IF NOT EXISTS dlr (
    smsc TEXT, ts TEXT, destination TEXT, source TEXT, service TEXT, url TEXT,
    mask INTEGER, status INTEGER, boxc TEXT)"""
BEARERBOX = shutil.which("bearerbox") or "/usr/sbin/bearerbox"
SMSBOX = shutil.which("smsbox") or "/usr/sbin/smsbox"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class KannelPorts:
    admin: int
    smsbox: int
    sendsms: int


@dataclass(frozen=True)
class KannelAccount:
    smsc_host: str
    smsc_port: int
    smsc_system_id: str
    smsc_password: str
    username: str  # the sendsms-user
    password: str
    max_messages: int = 10  # parts per long text
    # bearerbox's admin port (status, shutdown): loopback only, a new password each start.
    admin_password: str = field(default_factory=lambda: secrets.token_hex(12))


def kannel_config(account: KannelAccount, ports: KannelPorts, log_dir: Path) -> str:
    def quoted(value: str) -> str:
        if '"' in value or "\n" in value:
            raise ValueError("Kannel configuration values cannot hold quotes or newlines")
        return f'"{value}"'

    return f"""\
group = core
admin-port = {ports.admin}
admin-password = {quoted(account.admin_password)}
admin-interface = 127.0.0.1
smsbox-port = {ports.smsbox}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
box-deny-ip = "*.*.*.*"
log-file = {quoted(str(log_dir / "bearerbox.log"))}
log-level = 1
access-log = {quoted(str(log_dir / "access.log"))}
dlr-storage = sqlite3
store-type = spool
store-location = {quoted(str(log_dir / "spool"))}
sms-resend-retry = 3
sms-resend-freq = 5

# Receipts awaited and messages queued survive a restart of bearerbox (sqlite3 file, spool).
group = sqlite3-connection
id = dlr
database = {quoted(str(log_dir / "dlr.sqlite3"))}
max-connections = 1

group = dlr-db
id = dlr
table = dlr
field-smsc = smsc
field-timestamp = ts
field-destination = destination
field-source = source
field-service = service
field-url = url
field-mask = mask
field-status = status
field-boxc-id = boxc

group = smsc
smsc = smpp
smsc-id = smsc
host = {quoted(account.smsc_host)}
port = {account.smsc_port}
transceiver-mode = true
smsc-username = {quoted(account.smsc_system_id)}
smsc-password = {quoted(account.smsc_password)}
system-type = ""
source-addr-ton = 5
source-addr-npi = 0
dest-addr-ton = 1
dest-addr-npi = 1
enquire-link-interval = 30
reconnect-delay = 1
max-pending-submits = 32
wait-ack = 60
wait-ack-expire = 0x03

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports.smsbox}
sendsms-port = {ports.sendsms}
sendsms-interface = 127.0.0.1
log-file = {quoted(str(log_dir / "smsbox.log"))}
log-level = 1
mo-recode = true

group = sendsms-user
username = {quoted(account.username)}
password = {quoted(account.password)}
max-messages = {account.max_messages}
concatenation = true
user-allow-ip = "127.0.0.1"

group = sms-service
keyword = default
catch-all = true
max-messages = 0
text = "ignored"
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Kannel:
    ports: KannelPorts
    account: KannelAccount
    config: Path
    log_dir: Path
    bearerbox: subprocess.Popen[bytes]
    smsbox: subprocess.Popen[bytes]

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sendsms}/cgi-bin/sendsms"

    @property
    def status_url(self) -> str:
        return (
            f"http://127.0.0.1:{self.ports.admin}/status.txt?password={self.account.admin_password}"
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )


def _start(binary: str, config: Path, out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as log:
        return subprocess.Popen(
            [binary, str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_port(
    port: int, processes: list[subprocess.Popen[bytes]], what: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not _listening(port):
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"kannel: {what} exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"kannel: {what} not listening on {port} after {timeout_s:g} s")
        time.sleep(0.05)


@contextmanager
def running_kannel(
    account: KannelAccount, log_dir: Path | None = None, *, ports: KannelPorts | None = None
) -> Iterator[Kannel]:
    """bearerbox, then smsbox once bearerbox listens; both stopped on exit (smsbox first)."""
    if not Path(BEARERBOX).exists():
        raise RuntimeError("kannel is not installed: run scripts/ensure-services.sh (apt kannel)")
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="kannel-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = ports or KannelPorts(free_port(), free_port(), free_port())
    config = log_dir / "kannel.conf"
    config.write_text(kannel_config(account, ports, log_dir))
    (log_dir / "spool").mkdir(exist_ok=True)
    with sqlite3.connect(log_dir / "dlr.sqlite3") as db:
        db.execute(DLR_TABLE)
    bearerbox = _start(BEARERBOX, config, log_dir / "bearerbox.out")
    smsbox: subprocess.Popen[bytes] | None = None
    try:
        _wait_port(ports.smsbox, [bearerbox], "bearerbox", 30)
        smsbox = _start(SMSBOX, config, log_dir / "smsbox.out")
        _wait_port(ports.sendsms, [bearerbox, smsbox], "smsbox", 30)
        yield Kannel(ports, account, config, log_dir, bearerbox, smsbox)
    finally:
        if smsbox is not None:
            _stop(smsbox)
        _stop(bearerbox)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smsc-host", default="127.0.0.1")
    parser.add_argument("--smsc-port", type=int, default=2775)
    parser.add_argument("--smsc-system-id", default="kannel")
    parser.add_argument("--smsc-password", default="secret")
    parser.add_argument("--username", default="mailing")
    parser.add_argument("--password", default="kannel-secret")
    parser.add_argument("--sendsms-port", type=int, default=13013)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args()
    account = KannelAccount(
        args.smsc_host,
        args.smsc_port,
        args.smsc_system_id,
        args.smsc_password,
        args.username,
        args.password,
    )
    ports = KannelPorts(free_port(), free_port(), args.sendsms_port)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with running_kannel(account, args.log_dir, ports=ports) as kannel:
        print(f"kannel: sendsms {kannel.sendsms_url}, logs {kannel.log_dir}", flush=True)
        while not stop and kannel.bearerbox.poll() is None and kannel.smsbox.poll() is None:
            time.sleep(0.5)
    sys.exit(0)


if __name__ == "__main__":
    main()
