"""The services' settings under the rig: short leases, retries and breaker cool-downs, so that
recovery shows within seconds (the shipped defaults are for production)."""

from __future__ import annotations

RETRY_DELAYS = [0.2, 0.5, 1.0, 2.0]

# tests/pipeline: one test's mailing of a few hundred messages.
FAST = {
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "POLL_INTERVAL_S": "0.5",
    "LEASE_TTL_S": "5",
    "SENDING_LEASE_S": "5",
    "PROVIDER_TIMEOUT_S": "2",
    "END_SAFETY_MARGIN_S": "0.3",
    "RETRY_DELAYS_S": ",".join(str(d) for d in RETRY_DELAYS),
    "BREAKER_COOLDOWN_S": "0.5",
    "BREAKER_MAX_COOLDOWN_S": "2",
    "DB_POOL_SIZE": "5",
}

# tests/chaos and the soak: thousands of messages under faults on a loaded machine.
UNDER_FAULTS = FAST | {
    # The lease cap must drain within a lease, or the reaper re-publishes every live lease
    # every LEASE_TTL_S (see docs/RELIABILITY.md): 1,000 in 10 s asks only 100 sends/s of a
    # sender on this shared 2-core machine.
    "LEASE_CAP": "1000",
    "LEASE_TTL_S": "10",
}


def service_env(
    *,
    database_url: str,
    amqp_url: str,
    namespace: str,
    provider_url: str,
    provider_token: str,
    api_token: str | None = None,
) -> dict[str, str]:
    """Where every service finds the database, the broker namespace and the provider."""
    env = {
        "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url,
        "AMQP_NAMESPACE": namespace,
        "PROVIDER_URL": provider_url,
        "PROVIDER_TOKEN": provider_token,
    }
    if api_token is not None:
        env["API_TOKENS"] = api_token
    return env
