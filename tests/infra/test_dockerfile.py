"""The Dockerfile and .dockerignore, checked statically (no Docker engine needed)."""

from __future__ import annotations

import re

import pytest

from tests.infra.conftest import ROOT


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_multi_stage_on_a_pinned_slim_python(instructions: list[tuple[str, str]]) -> None:
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 2
    names = []
    for line in froms:
        image, _, name = line.partition(" AS ")
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image.split()[-1])
        assert image in names or re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image
        names.append(name.strip())
    assert names[-1] == "runtime" and "builder" in names
    assert not any(":latest" in line or line.split()[0] == "python" for line in froms)


def test_runtime_stage(instructions: list[tuple[str, str]]) -> None:
    runtime = stages(instructions)[-1]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # Numeric, so Kubernetes' runAsNonRoot can verify it; the manifests run as the same uid.
    assert users[-1].split(":")[0].isdigit()
    # No compilers or package installs in the final image: wheels are built in the builder.
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runs)
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert any(c.startswith("--from=builder") for c in copies)
    assert {"alembic.ini ./", "shared ./shared", "services ./services"} <= set(copies)


def test_builder_installs_the_locked_versions(instructions: list[tuple[str, str]]) -> None:
    """The image gets uv.lock's versions (hash-checked), never a fresh resolution."""
    builder = stages(instructions)[0]
    copies = [rest for keyword, rest in builder if keyword == "COPY"]
    assert "pyproject.toml uv.lock ./" in copies
    runs = " ".join(rest for keyword, rest in builder if keyword == "RUN")
    # The uv that exports is the one the lock pins; --locked fails on a stale lock.
    assert "uv==$(python -c" in runs and "p['name'] == 'uv'" in runs
    assert "uv export --locked --no-emit-project" in runs and "--extra" not in runs
    pip_commands = [c for c in re.split(r"&&", runs) if re.search(r"\bpip (wheel|install)\b", c)]
    for command in pip_commands:
        if "uv==" in command:
            continue
        assert "--require-hashes -r requirements.txt" in command, command


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".env", ".venv", "tests", "**/__pycache__"} <= ignored
    # What the image needs must not be ignored.
    assert not ignored & {"shared", "services", "alembic.ini", "pyproject.toml"}
