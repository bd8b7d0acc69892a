"""The admin API: clients, mailings, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api import health
from services.api.audit import service as audit_service
from services.api.audit.router import router as audit_router
from services.api.auth import parse_api_tokens
from services.api.auth_limit import FailedAuthLimiter
from services.api.body_limit import BodySizeLimit
from services.api.browser_headers import BrowserSecurityHeaders
from services.api.bulk import BulkSlots
from services.api.clients.router import router as clients_router
from services.api.errors import install_error_handlers
from services.api.events import AmqpEvents, EventPublisher
from services.api.exports import router as exports_router
from services.api.imports.router import router as imports_router
from services.api.imports.service import ImportTasks
from services.api.mailings import check
from services.api.mailings.resend import router as resend_router
from services.api.mailings.router import router as mailings_router
from services.api.mailings.test_send import router as test_send_router
from services.api.observability import RequestObservability
from services.api.openapi import operation_id
from services.api.providers import metrics as provider_metrics
from services.api.providers.router import router as providers_router
from services.api.providers.state import ApiProviders
from services.api.receipts import router as receipts_router
from services.api.swagger import docs_router
from services.api.ui import mount_console
from shared import tracing
from shared.db import create_engine, create_session_factory
from shared.settings import ApiSettings

log = structlog.get_logger("api")

DESCRIPTION = """
Manage a directory of clients and SMS mailings to them, and read delivery statistics.

Every `/api/v1` call needs `Authorization: Bearer <token>` with a token from `API_TOKENS`.
A token has a role: **viewer** tokens may read everything, **admin** tokens may also change
data; each operation names the role it needs (`x-required-role`). Every change is recorded in
the audit log (`GET /api/v1/audit`) with the token's name.
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
        # The delivery-rate gauges of the MailingProviderDeliveryRateLow alert.
        gauges = asyncio.create_task(
            provider_metrics.keep_fresh(
                app.state.session_factory, lambda: app.state.providers.current.providers
            )
        )
        pruning = None
        if settings.audit_retention_days is not None:
            pruning = asyncio.create_task(
                prune_audit_log(
                    app.state.session_factory,
                    settings.audit_retention_days,
                    settings.audit_prune_interval_s,
                )
            )
        try:
            yield
        finally:
            await app.state.import_tasks.close()
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges
            if pruning is not None:
                pruning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruning
            if isinstance(publisher, AmqpEvents):
                await publisher.close()
            await engine.dispose()
            tracing.flush()

    app = FastAPI(
        title="Mailing service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by services/api/swagger: Swagger UI from our origin
        redoc_url=None,  # ReDoc would load its script from a CDN
        openapi_url="/openapi.json",
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.api_tokens = parse_api_tokens(t.get_secret_value() for t in settings.api_tokens)
    app.state.events = publisher
    app.state.import_tasks = ImportTasks()
    app.state.bulk_slots = BulkSlots(settings.bulk_limit)
    app.state.failed_auth = FailedAuthLimiter(settings.auth_failures_per_minute)
    # PROVIDERS_FILE: an invalid file stops the api here, as it stops the sender.
    app.state.providers = ApiProviders(settings)
    app.add_middleware(check.ProvidersContext, current=lambda: app.state.providers.current)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(docs_router(title=app.title, openapi_url=app.openapi_url or ""))
    # Before the clients router: /clients/imports and /clients/export are not /clients/{id}.
    app.include_router(imports_router, prefix="/api/v1")
    app.include_router(exports_router, prefix="/api/v1")
    app.include_router(clients_router, prefix="/api/v1")
    app.include_router(mailings_router, prefix="/api/v1")
    app.include_router(resend_router, prefix="/api/v1")
    app.include_router(test_send_router, prefix="/api/v1")
    app.include_router(audit_router, prefix="/api/v1")
    app.include_router(providers_router, prefix="/api/v1")
    # No bearer token: the gateway proves a receipt by its dlr-url's signature.
    app.include_router(receipts_router, prefix="/api/v1")
    mount_console(app, settings)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        per_path={
            "/api/v1/clients/imports": settings.import_max_bytes,
            "/ui/imports": settings.import_max_bytes,  # the console's upload form
        },
    )
    app.add_middleware(
        BrowserSecurityHeaders, ui_base_url=settings.ui_base_url, issuer=settings.oidc_issuer
    )
    # Outermost: every request, even a refused one, gets an id, a log line and metrics.
    app.add_middleware(RequestObservability)
    instrument_tracing(app)
    return app


def instrument_tracing(app: FastAPI) -> None:
    """A server span per request (OpenTelemetry's FastAPI instrumentation, outside every
    middleware) when tracing is on; nothing at all when it is off."""
    provider = tracing.provider()
    if provider is None:
        return
    # The stable HTTP semantic conventions (http.request.method, http.response.status_code, ...),
    # as the sender's client spans use; read once, by the instrumentation's first import.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls="/healthz,/readyz,/metrics",
        server_request_hook=mask_query,
        # Not a span per ASGI message: one per request is what tells a story.
        exclude_spans=["receive", "send"],
    )


def mask_query(span: Any, scope: dict[str, Any]) -> None:
    """A span keeps the query's parameter names, never their values: a filter may be a phone
    (`url.query` would carry it to the trace backend)."""
    query = scope.get("query_string", b"")
    if query and span.is_recording():
        names = [name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
        span.set_attribute("url.query", "&".join(f"{name}=***" for name in names))


async def prune_audit_log(
    session_factory: async_sessionmaker[AsyncSession], retention_days: int, interval_s: float
) -> None:
    """AUDIT_RETENTION_DAYS: delete older audit entries now and every `interval_s`. Every api
    replica runs it; the DELETE is idempotent, so they need no coordination."""
    while True:
        try:
            async with session_factory() as session:
                pruned = await audit_service.prune(
                    session, retention_days=retention_days, now=datetime.now(UTC)
                )
            if pruned:
                log.info("audit log pruned", entries=pruned, retention_days=retention_days)
        except Exception:
            log.exception("audit log prune failed; trying again later")
        await asyncio.sleep(interval_s)
