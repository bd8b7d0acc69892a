"""The console's pages: one module per page, each with its router (paths under /ui)."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.ui.pages import (
    audit,
    clients,
    dashboard,
    imports,
    mailings,
    providers,
    test_sends,
)
from services.api.ui.pages.common import static_router

routers: list[APIRouter] = [
    static_router,
    dashboard.router,
    mailings.router,
    test_sends.router,
    clients.router,
    imports.router,
    providers.router,
    audit.router,
]
