"""The providers' rig: the SMSC simulator for the whole module, reset before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from services.sender.smpp import OnDeliver, SmppClient
from shared.providers import SmppProvider
from tests.support.smsc import Smsc, running_smsc


@pytest.fixture(scope="session")
def smsc_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smsc]:
    with running_smsc(tmp_path_factory.mktemp("smsc")) as smsc:
        yield smsc


@pytest.fixture
def smsc(smsc_process: Smsc) -> Iterator[Smsc]:
    if smsc_process.process.poll() is not None:
        raise AssertionError(f"smsc-sim died:\n{smsc_process.log.read_text()[-3000:]}")
    smsc_process.reset()
    yield smsc_process
    smsc_process.reset()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[[SmppProvider, OnDeliver], SmppClient]]:
    """Started SMPP clients (short timeouts and reconnects), closed after the test."""
    clients: list[SmppClient] = []

    def make(provider: SmppProvider, on_deliver: OnDeliver) -> SmppClient:
        client = SmppClient(provider, on_deliver, response_timeout_s=5.0, reconnect_max_s=0.5)
        client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close(drain_timeout_s=2.0)
