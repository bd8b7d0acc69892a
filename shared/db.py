"""Async engine and session factory."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import BaseServiceSettings


def create_engine(settings: BaseServiceSettings, *, pool_size: int | None = None) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        # A runaway statement must not hold locks forever, nor a process frozen (SIGSTOP, a VM
        # pause, a debugger) between a statement and its commit: the server ends that session,
        # rolls its transaction back and frees the locks (the counter rows every status change
        # touches), so the other replicas go on.
        connect_args={
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}"
            f" -c idle_in_transaction_session_timeout="
            f"{settings.db_idle_in_transaction_timeout_ms}"
        },
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def database_ready(engine: AsyncEngine) -> bool:
    """For readiness probes: the database answers a trivial query."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock (`now()`: the start of the session's transaction)."""
    return (await session.execute(text("SELECT now()"))).scalar_one()
