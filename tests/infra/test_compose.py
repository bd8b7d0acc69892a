"""docker-compose.yml, read as data: services, build, health checks, ordering, environment."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.infra.conftest import ROOT
from tests.infra.known import known_env_names

APP_SERVICES = {
    "api": "services.api",
    "scheduler": "services.scheduler",
    "sender": "services.sender",
    "provider-stub": "services.provider_stub",
    "reporter": "services.reporter",
}
NEEDS_MIGRATIONS = ("api", "scheduler", "sender", "reporter")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_rabbitmq_has_at_least_once_dead_lettering(services: dict[str, dict[str, Any]]) -> None:
    # Quorum queues with at-least-once dead-lettering need 3.10 or newer.
    image = services["rabbitmq"]["image"]
    match = re.fullmatch(r"rabbitmq:(\d+)\.(\d+)(-management)?", image)
    assert match and (int(match[1]), int(match[2])) >= (3, 10), image


def test_app_services_share_one_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    for name in (*APP_SERVICES, "migrate"):
        service = services[name]
        assert service["build"] == ".", name
        assert service["image"] == "mailing-service:local", name
    for name, module in APP_SERVICES.items():
        assert services[name]["command"] == ["python", "-m", module]
        assert (ROOT / module.replace(".", "/") / "__main__.py").is_file()


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        _, _, tag = image.rpartition(":")
        assert ":" in image and tag and tag != "latest", (name, image)


def test_health_checks_ask_the_port_each_service_is_given(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("postgres", "rabbitmq"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for name in APP_SERVICES:
        test = services[name]["healthcheck"]["test"]
        # The slim image has no curl: Python itself asks the service.
        assert test[:3] == ["CMD", "python", "-c"], name
        compile(test[3], name, "exec")
        environment = services[name]["environment"]
        port = next(
            environment[k] for k in ("METRICS_PORT", "API_PORT", "STUB_PORT") if k in environment
        )
        assert f"http://127.0.0.1:{port}/" in test[3], name


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in NEEDS_MIGRATIONS:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("api", "scheduler", "sender"):
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert services["sender"]["depends_on"]["provider-stub"]["condition"] == "service_healthy"


def test_sender_scales(services: dict[str, dict[str, Any]]) -> None:
    sender = services["sender"]
    assert "container_name" not in sender
    assert "ports" not in sender
    assert not any("container_name" in s for s in services.values())


def test_environment_names_are_settings(services: dict[str, dict[str, Any]]) -> None:
    known = known_env_names()
    for name in (*APP_SERVICES, "migrate"):
        environment = services[name]["environment"]
        assert isinstance(environment, dict), name
        unknown = {key for key in environment if key.upper() not in known}
        assert not unknown, (name, unknown)


def test_every_service_uses_the_migrated_database(services: dict[str, dict[str, Any]]) -> None:
    database_urls = {services[n]["environment"]["DATABASE_URL"] for n in NEEDS_MIGRATIONS}
    assert database_urls == {services["migrate"]["environment"]["DATABASE_URL"]}
    assert database_urls.pop().startswith("postgresql+psycopg://")


def test_api_tokens_must_be_given(services: dict[str, dict[str, Any]]) -> None:
    tokens = services["api"]["environment"]["API_TOKENS"]
    assert re.fullmatch(r"\$\{API_TOKENS:\?[^}]+\}", tokens), tokens
    # Nobody else gets the admin tokens.
    assert all("API_TOKENS" not in services[n]["environment"] for n in NEEDS_MIGRATIONS[1:])


def test_stub_accepts_the_token_the_senders_send(services: dict[str, dict[str, Any]]) -> None:
    sender = services["sender"]["environment"]
    stub = services["provider-stub"]["environment"]
    assert sender["PROVIDER_TOKEN"] == stub["STUB_TOKEN"]
    assert "provider-stub:8090" in sender["PROVIDER_URL"]
    assert stub["STUB_HOST"] == "0.0.0.0"


def test_the_csv_import_gets_the_same_limit_and_timeout_as_in_kubernetes(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((ROOT / "deploy/k8s/base/configmap.yaml").read_text())["data"]
    api = services["api"]["environment"]
    assert api["IMPORT_MAX_BYTES"] == config["IMPORT_MAX_BYTES"]
    assert api["BULK_TIMEOUT_S"] == config["BULK_TIMEOUT_S"]


def test_the_console_sign_in_comes_from_an_optional_env_file_not_the_compose_file(
    services: dict[str, dict[str, Any]],
) -> None:
    """OIDC settings and secrets live in console.env (not committed); compose starts without
    it (the console then says sign-on is not configured); only the api reads it."""
    api = services["api"]
    assert api["env_file"] == [{"path": "console.env", "required": False}]
    assert not any("env_file" in s for name, s in services.items() if name != "api")
    for name, service in services.items():
        environment = service.get("environment", {})
        assert not {k for k in environment if k.startswith(("OIDC_", "UI_"))}, name
    assert "/console.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_console_env_example_names_settings_the_api_reads() -> None:
    from shared.settings import ApiSettings

    lines = (ROOT / "console.env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    known = known_env_names()
    assert set(example) <= known, set(example) - known
    for required in ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "UI_SESSION_SECRET",
                     "OIDC_ADMIN_GROUPS", "OIDC_VIEWER_GROUPS", "UI_BASE_URL"):  # fmt: skip
        assert required in example, required
    settings = ApiSettings.model_validate({k.lower(): v for k, v in example.items()})
    assert settings.sso_configured and settings.oidc_admin_groups == ["mailing-admins"]
    # The redirect URI the example's comment asks to register is the one the api will use.
    assert settings.ui_base_url == "http://127.0.0.1:8000"
