"""uv.lock: current with pyproject.toml, and the one source of versions for every install path
(make install, .ci/run, the Dockerfile, GitLab CI). See docs/DEPENDENCIES.md."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scripts.locked_version import locked_version
from tests.infra.conftest import ROOT

UV = Path(sys.executable).with_name("uv")


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_lock_matches_pyproject() -> None:
    # Offline: a current lock is checked against pyproject.toml without the index.
    result = uv("lock", "--check", "--offline")
    assert result.returncode == 0, result.stderr


def test_this_environment_is_the_locked_one() -> None:
    result = uv("sync", "--locked", "--extra", "dev", "--check", "--offline")
    assert result.returncode == 0, result.stderr


def test_every_package_is_pinned_with_hashes() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for package in lock["package"]:
        if package["source"].get("editable") == ".":
            continue  # the project itself
        assert package["source"] == {"registry": "https://pypi.org/simple"}, package["name"]
        files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
        assert files and all(f["hash"].startswith("sha256:") for f in files), package["name"]


def test_uv_itself_is_locked() -> None:
    version = locked_version("uv")
    assert version == subprocess.check_output([str(UV), "--version"], text=True).split()[1]


def test_a_stale_lock_fails_the_install_loudly(tmp_path: Path) -> None:
    """A dependency added to pyproject.toml (say, by a merge) without `make lock`: the sync that
    `make install` runs refuses, and the Makefile says to run `make lock`."""
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    # A package the lock holds only as a transitive dependency: resolvable offline, new as a
    # direct one (orjson, the first choice, has since become a real dependency).
    added = text.replace('"tzdata>=2024.1",', '"tzdata>=2024.1",\n    "idna>=2",', 1)
    assert added != text
    pyproject.write_text(added)
    # Checking the lock resolves the project again, from the index's pages: offline that
    # works only where a `make lock` left them in uv's cache (a fresh machine has only the
    # locked wheels), so it asks the registry, as `make install` may.
    result = uv("sync", "--locked", "--extra", "dev", "--dry-run", cwd=tmp_path)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert "$(UV) sync --quiet --locked --compile-bytecode --extra dev ||" in makefile
    assert "run 'make lock'" in makefile


@pytest.mark.parametrize("path", ["Makefile", ".ci/run"])
def test_local_installs_go_through_the_lock(path: str) -> None:
    text = (ROOT / path).read_text()
    assert "pip install -e" not in text and "pip install -q -e" not in text
    if path == ".ci/run":
        assert "make install" in text
    else:
        assert '$(BIN)/pip install -q "uv==$(LOCKED_UV)"' in text
        assert "lock: | $(UV)\n\t$(UV) lock" in text
