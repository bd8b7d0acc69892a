"""The real api process (`python -m services.api`) for the tests that need its sockets and its
memory: slow readers, 50 MB uploads, proxy headers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.domain.retry import DEFAULT_RETRY_DELAYS_S
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN
from tests.support.broker import AMQP_URL, delete_namespace, new_namespace
from tests.support.database import sqlalchemy_url
from tests.support.processes import ServiceProcess, free_port, launch

AUTH_FAILURES_PER_MINUTE = 5


@pytest.fixture(scope="module")
async def api_process(
    db_name: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    port = free_port()
    namespace = new_namespace()
    api = launch(
        "api",
        "services.api",
        {
            "DATABASE_URL": sqlalchemy_url(db_name),
            "AMQP_URL": AMQP_URL,
            "AMQP_NAMESPACE": namespace,
            "API_TOKENS": f"{ADMIN_TOKEN},reports:viewer:{VIEWER_TOKEN}",
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "LOG_FORMAT": "json",
            "DB_POOL_SIZE": "10",  # the default, as in production
            "AUTH_FAILURES_PER_MINUTE": str(AUTH_FAILURES_PER_MINUTE),
            "FORWARDED_ALLOW_IPS": "127.0.0.1",  # the test plays the Ingress controller
        },
        tmp_path_factory.mktemp("security-api"),
        port,
    )
    try:
        await api.wait_ready(timeout=60)
        yield api
    finally:
        await api.astop()
        await delete_namespace(namespace, list(DEFAULT_RETRY_DELAYS_S))


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water resident set (VmHWM): no sampling can miss a peak."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
