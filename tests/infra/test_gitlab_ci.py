""".gitlab-ci.yml: stages, jobs and the services the tests need."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.infra.conftest import ROOT


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())


def jobs(ci: dict[str, Any]) -> dict[str, dict[str, Any]]:
    reserved = {"stages", "variables", "default", "workflow", "include", "image", "services"}
    return {k: v for k, v in ci.items() if k not in reserved and not k.startswith(".")}


def resolved(ci: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    base = ci[job["extends"]] if "extends" in job else {}
    return {**base, **job}


def script(ci: dict[str, Any], name: str) -> str:
    job = resolved(ci, ci[name])
    return "\n".join(job.get("before_script", []) + job["script"])


def test_stages_and_jobs(ci: dict[str, Any]) -> None:
    assert ci["stages"] == ["lint", "typecheck", "test", "build"]
    all_jobs = jobs(ci)
    by_stage = {job["stage"] for job in all_jobs.values()}
    assert by_stage == set(ci["stages"])
    for name in ("lint", "typecheck", "test", "build"):
        assert all_jobs[name]["stage"] == name


def test_lint_and_typecheck(ci: dict[str, Any]) -> None:
    assert "ruff check ." in script(ci, "lint")
    assert "ruff format --check ." in script(ci, "lint")
    assert "mypy shared services" in script(ci, "typecheck")
    for name in ("lint", "typecheck", "test", "test-chaos"):
        assert_installs_the_lock(script(ci, name))


def assert_installs_the_lock(text: str) -> None:
    """uv from the lock, then `uv sync --locked`: no job resolves versions of its own."""
    assert 'pip install -q "uv==$(python scripts/locked_version.py uv)"' in text
    assert "uv sync --quiet --locked --compile-bytecode --extra dev" in text
    assert "pip install -q -e" not in text and "pip install -r" not in text


def test_cache_follows_the_lock(ci: dict[str, Any]) -> None:
    cache = ci[".python"]["cache"]
    assert cache["key"]["files"] == ["uv.lock"]
    assert ".cache/uv" in cache["paths"]
    assert ci["variables"]["UV_CACHE_DIR"] == "$CI_PROJECT_DIR/.cache/uv"


def test_tests_get_postgres_and_rabbitmq(ci: dict[str, Any]) -> None:
    job = resolved(ci, ci["test"])
    services = {s["name"]: s for s in job["services"]}
    assert services["postgres:15"]["alias"] == "postgres"
    [rabbit] = [s for name, s in services.items() if name.startswith("rabbitmq:3.")]
    assert int(rabbit["name"].split(":")[1].split(".")[1]) >= 10
    variables = job["variables"]
    assert variables["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert variables["TEST_PG_ADMIN_DSN"] == "postgresql://postgres@postgres:5432/postgres"
    assert variables["TEST_AMQP_URL"].startswith(f"amqp://guest:guest@{rabbit['alias']}:5672")
    assert "pytest" in script(ci, "test")
    # tests/monitoring runs promtool and a real Prometheus.
    assert "apt-get install -y -qq --no-install-recommends prometheus" in script(ci, "test")
    # tests/ui drives /usr/bin/chromium and starts the dev identity provider on node.
    assert "apt-get install -y -qq chromium nodejs npm" in script(ci, "test")
    # tests/providers start Kannel in front of the SMSC simulator.
    assert "apt-get install -y -qq --no-install-recommends kannel" in script(ci, "test")


def test_the_tests_read_the_ci_variables() -> None:
    assert "TEST_PG_ADMIN_DSN" in (ROOT / "tests/support/database.py").read_text()
    assert "TEST_AMQP_URL" in (ROOT / "tests/support/broker.py").read_text()


def test_build_uses_the_dockerfile_without_a_daemon(ci: dict[str, Any]) -> None:
    build = ci["build"]
    assert "kaniko" in build["image"]["name"]
    assert not build["image"]["name"].endswith(":latest")
    text = script(ci, "build")
    assert '--dockerfile "$CI_PROJECT_DIR/Dockerfile"' in text
    assert "$CI_REGISTRY_IMAGE" in text
