from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.kustomize import Obj, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "production": K8S / "overlays" / "production",
    "demo": K8S / "overlays" / "demo",
}


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    """Every kustomization rendered once per session."""
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}
