""".gitlab-ci.yml: every job from the lock, and the tests reach the services of their job."""

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


def test_every_stage_has_a_job_and_every_job_a_stage(ci: dict[str, Any]) -> None:
    assert {job["stage"] for job in jobs(ci).values()} == set(ci["stages"])


def test_every_python_job_installs_from_the_lock(ci: dict[str, Any]) -> None:
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


def test_the_tests_reach_the_jobs_postgres_and_rabbitmq(ci: dict[str, Any]) -> None:
    job = resolved(ci, ci["test"])
    services = {s["name"].partition(":")[0]: s for s in job["services"]}
    # Quorum queues with at-least-once dead-lettering need RabbitMQ 3.10 or newer.
    major, minor = services["rabbitmq"]["name"].partition(":")[2].split(".")[:2]
    assert (int(major), int(minor)) >= (3, 10)
    variables = job["variables"]
    assert f"@{services['postgres']['alias']}:5432/" in variables["TEST_PG_ADMIN_DSN"]
    assert f"@{services['rabbitmq']['alias']}:5672" in variables["TEST_AMQP_URL"]
    # ... and the tests read those variables.
    assert "TEST_PG_ADMIN_DSN" in (ROOT / "tests/support/database.py").read_text()
    assert "TEST_AMQP_URL" in (ROOT / "tests/support/broker.py").read_text()


def test_build_uses_the_dockerfile_without_a_daemon(ci: dict[str, Any]) -> None:
    build = ci["build"]
    assert not build["image"]["name"].endswith(":latest")
    assert '--dockerfile "$CI_PROJECT_DIR/Dockerfile"' in script(ci, "build")
