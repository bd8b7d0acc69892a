"""Print the version uv.lock pins for one package: `python scripts/locked_version.py uv`.

Standard library only: the Makefile, the Dockerfile and CI run it before anything is installed.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "uv.lock"


def locked_version(name: str, lock: Path = LOCK) -> str:
    packages = tomllib.loads(lock.read_text())["package"]
    versions = {p["version"] for p in packages if p["name"] == name and "version" in p}
    if len(versions) != 1:
        raise SystemExit(f"{lock.name} pins {name} {len(versions)} times: {sorted(versions)}")
    return versions.pop()


if __name__ == "__main__":
    print(locked_version(sys.argv[1]))
