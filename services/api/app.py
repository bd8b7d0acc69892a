"""The admin API: clients, mailings, statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.api import health
from services.api.body_limit import BodySizeLimit
from services.api.clients.router import router as clients_router
from services.api.errors import install_error_handlers
from services.api.events import AmqpEvents, EventPublisher
from services.api.mailings.router import router as mailings_router
from services.api.observability import RequestObservability
from services.api.ui import mount_console
from shared.db import create_engine, create_session_factory
from shared.settings import ApiSettings

DESCRIPTION = """
Manage a directory of clients and SMS mailings to them, and read delivery statistics.

Every `/api/v1` call needs `Authorization: Bearer <token>` with a token from `API_TOKENS`.
Datetimes are ISO 8601 with an offset. Errors are JSON: `{"detail": "...", "errors": [...]}`.
Lists are keyset-paginated: pass a page's `next_after_id` as `after_id` for the next one.
"""


def create_app(
    settings: ApiSettings | None = None, events: EventPublisher | None = None
) -> FastAPI:
    """The app; without `events` it publishes wake-up hints to RabbitMQ at AMQP_URL."""
    settings = settings or ApiSettings()
    publisher = events or AmqpEvents(settings.amqp_url, settings.amqp_namespace)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.session_factory = create_session_factory(engine)
        if isinstance(publisher, AmqpEvents):
            await publisher.start()
        try:
            yield
        finally:
            if isinstance(publisher, AmqpEvents):
                await publisher.close()
            await engine.dispose()

    app = FastAPI(
        title="Mailing service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.api_tokens = [token.get_secret_value() for token in settings.api_tokens]
    app.state.events = publisher
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(clients_router, prefix="/api/v1")
    app.include_router(mailings_router, prefix="/api/v1")
    mount_console(app, settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outermost: every request, even a refused one, gets an id, a log line and metrics.
    app.add_middleware(RequestObservability)
    return app
