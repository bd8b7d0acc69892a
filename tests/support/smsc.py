"""The SMSC simulator (scripts/smsc-sim, npm `smpp` on node) as a real process on free ports,
with its HTTP control port: faults on demand, stats and the messages it received."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.database import ROOT
from tests.support.rig.processes import free_port

SIM_DIR = ROOT / "scripts" / "smsc-sim"
SYSTEM_ID = "mailing"
PASSWORD = "secret"
# Kannel's own account at the simulator (scripts/kannel.py binds with it).
KANNEL_SYSTEM_ID = "kannel"
KANNEL_PASSWORD = "k-smpp"  # SMPP 3.4: at most 8 characters
# A second aggregator account (two providers of different quality on one simulator).
SECOND_SYSTEM_ID = "second"
SECOND_PASSWORD = "second"
# A second Kannel's (the SMSC sends receipts on any bind of an account: one Kannel each).
KANNEL2_SYSTEM_ID = "kannel2"
KANNEL2_PASSWORD = "k2-smpp"
ACCOUNTS = ",".join(
    f"{system_id}:{password}"
    for system_id, password in [
        (SYSTEM_ID, PASSWORD),
        (KANNEL_SYSTEM_ID, KANNEL_PASSWORD),
        (SECOND_SYSTEM_ID, SECOND_PASSWORD),
        (KANNEL2_SYSTEM_ID, KANNEL2_PASSWORD),
    ]
)


def ensure_installed() -> None:
    """`npm ci` once, as scripts/devrun.py does for the dev identity provider."""
    if not (SIM_DIR / "node_modules" / "smpp").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=SIM_DIR,
            check=True,
            capture_output=True,
        )


@dataclass
class Smsc:
    port: int
    control_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def faults(self, **switches: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.control}/faults", json=switches, timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        httpx.post(f"{self.control}/reset", timeout=5).raise_for_status()

    def drop_binds(self, system_id: str | None = SYSTEM_ID) -> int:
        """Close the account's binds (every account's with None) without an unbind."""
        body = {"system_id": system_id} if system_id else {}
        response = httpx.post(f"{self.control}/drop-binds", json=body, timeout=5)
        return int(response.json()["dropped"])

    def bound(self, system_id: str = SYSTEM_ID) -> int:
        return int(self.stats()["bound_by_account"].get(system_id, 0))

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.control}/stats", timeout=5).json())

    def messages(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.control}/messages", timeout=5).json())

    def mo(self, sender: str, text: str, system_id: str = SYSTEM_ID) -> None:
        httpx.post(
            f"{self.control}/mo",
            json={"system_id": system_id, "from": sender, "text": text},
            timeout=5,
        ).raise_for_status()

    def unknown_receipt(self, system_id: str = SYSTEM_ID) -> str:
        response = httpx.post(
            f"{self.control}/unknown-receipt", json={"system_id": system_id}, timeout=5
        )
        return str(response.json()["id"])


def _up(smsc: Smsc) -> bool:
    try:
        return httpx.get(f"{smsc.control}/stats", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_smsc(
    log_dir: Path, *, users: str = ACCOUNTS, port: int | None = None
) -> Iterator[Smsc]:
    """Start the simulator (SMPP on `port`, else a free one); stop it on exit."""
    ensure_installed()
    port, control_port = port or free_port(), free_port()
    log = log_dir / f"smsc-sim-{port}.log"
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "SMSC_PORT": str(port),
        "SMSC_CONTROL_PORT": str(control_port),
        "SMSC_USERS": users,
        "SMSC_RECEIPT_DELAY_MS": "100",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["node", str(SIM_DIR / "server.mjs")],
            cwd=SIM_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    smsc = Smsc(port, control_port, process, log)
    try:
        deadline = time.monotonic() + 30
        while not _up(smsc):
            if process.poll() is not None:
                raise AssertionError(f"smsc-sim exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"smsc-sim not up in 30 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield smsc
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
