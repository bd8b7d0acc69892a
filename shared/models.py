"""Database schema: clients, mailings, messages and per-mailing status counters.

The migrations in `shared/migrations` are the source of truth for the database;
these models mirror them for queries and for the migration autogenerate check.
"""

from __future__ import annotations

import re
from datetime import datetime, time

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    Time,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy import (
    text as sql,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.domain.statuses import MESSAGE_OPEN_STATUSES, MailingStatus, MessageStatus

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _sql_in(values: object) -> str:
    return ", ".join(f"'{value}'" for value in values)  # type: ignore[attr-defined]


OPEN_STATUSES_SQL = _sql_in(MESSAGE_OPEN_STATUSES)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


TimestampTZ = DateTime(timezone=True)


class Client(Base):
    __tablename__ = "client"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    phone: Mapped[str] = mapped_column(Text)
    operator_code: Mapped[str] = mapped_column(Text)
    tag: Mapped[str] = mapped_column(Text, server_default="")
    timezone: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    # Set when the client opted out (migration 0004): such a client gets no message.
    opted_out_at: Mapped[datetime | None] = mapped_column(TimestampTZ)

    __table_args__ = (
        CheckConstraint(r"phone ~ '^7[0-9]{10}$'", name="phone_format"),
        CheckConstraint(r"operator_code ~ '^[0-9]{3}$'", name="operator_code_format"),
        Index(
            "uq_client_phone_live", "phone", unique=True, postgresql_where=sql("deleted_at IS NULL")
        ),
        # Serves the filter preview and list filters on live clients.
        Index(
            "ix_client_operator_code_tag",
            "operator_code",
            "tag",
            postgresql_where=sql("deleted_at IS NULL"),
        ),
    )


class Mailing(Base):
    __tablename__ = "mailing"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    start_at: Mapped[datetime] = mapped_column(TimestampTZ)
    end_at: Mapped[datetime] = mapped_column(TimestampTZ)
    text: Mapped[str] = mapped_column(Text)
    filter_operator_codes: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=sql("'{}'::text[]")
    )
    filter_tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=sql("'{}'::text[]"))
    send_window_start: Mapped[time | None] = mapped_column(Time)
    send_window_end: Mapped[time | None] = mapped_column(Time)
    status: Mapped[str] = mapped_column(Text, server_default=MailingStatus.SCHEDULED.value)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    idempotency_fingerprint: Mapped[str | None] = mapped_column(Text)
    # Fan-out: the highest client id when the mailing started (the recipient snapshot) and
    # the highest client id already turned into messages.
    fanout_max_client_id: Mapped[int | None] = mapped_column(BigInteger)
    fanout_cursor: Mapped[int | None] = mapped_column(BigInteger)
    # When the fan-out last moved on: the scheduler advances the one that waited longest.
    fanout_advanced_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    started_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    fanout_done_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    completed_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    # Approval of large sends (migration 0013): who created it (the actor's name; NULL before
    # 0013), and who approved it last (cleared when an edit sends it back for approval).
    created_by: Mapped[str | None] = mapped_column(Text)
    approved_by: Mapped[str | None] = mapped_column(Text)
    approved_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    # Frequency caps (migration 0014): a transactional mailing is neither capped nor counted;
    # `frequency_cap` is its own cap (canonical `N/<period>,...`), None: FREQUENCY_CAP.
    transactional: Mapped[bool] = mapped_column(Boolean, server_default=false())
    frequency_cap: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("end_at > start_at", name="end_after_start"),
        CheckConstraint(
            f"status IN ({_sql_in(s.value for s in MailingStatus)})", name="status_known"
        ),
        CheckConstraint(
            "(send_window_start IS NULL) = (send_window_end IS NULL)", name="send_window_pair"
        ),
        Index(
            "uq_mailing_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=sql("idempotency_key IS NOT NULL"),
        ),
        # The scheduler's look-ups: due scheduled mailings and the running ones.
        Index(
            "ix_mailing_status_start_at",
            "status",
            "start_at",
            postgresql_where=sql("status IN ('scheduled', 'running')"),
        ),
        # The fan-out's pick: the few mailings whose message rows are still being created.
        Index(
            "ix_mailing_fanout_pending",
            "started_at",
            postgresql_where=sql("status IN ('running', 'paused') AND fanout_done_at IS NULL"),
        ),
    )


class Message(Base):
    """Partitioned by RANGE (mailing_id) (migration 0007): every message of a mailing is in the
    partition of its block of mailing ids, which retention drops whole (docs/RETENTION.md).
    The partitions (`message_legacy`, `message_p<first mailing id>`) are not modelled."""

    __tablename__ = "message"

    # The provider's msgId: one identity sequence for every partition, so an id alone names
    # one message; the key holds mailing_id too because a partitioned table's keys must.
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    # No foreign keys (migration 0002): they cost a trigger call per row each, 44% of a fan-out
    # chunk, and guard nothing: messages are created only by the fan-out's INSERT … SELECT from
    # existing client and mailing rows, which are never deleted, only soft-deleted.
    mailing_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # None only for a test send (migration 0006), which goes to `phone` instead of a client.
    client_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text, server_default=MessageStatus.PENDING.value)
    # A test send (`POST /mailings/{id}/test`): no counter or statistic counts it.
    is_test: Mapped[bool] = mapped_column(Boolean, server_default=false())
    phone: Mapped[str | None] = mapped_column(Text)
    # Fencing token of the current lease: a job carrying another token is stale.
    token: Mapped[int | None] = mapped_column(BigInteger)
    lease_until: Mapped[datetime | None] = mapped_column(TimestampTZ)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    queued_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    sent_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    updated_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    # Which provider took it and that provider's id for it (migration 0015): receipts are
    # matched by both. A long SMPP text: its first part's SMSC id (shared/receipts.py).
    provider: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("mailing_id", "client_id"),
        CheckConstraint(
            f"status IN ({_sql_in(s.value for s in MessageStatus)})", name="status_known"
        ),
        CheckConstraint(
            "(is_test AND phone IS NOT NULL AND client_id IS NULL) "
            "OR (NOT is_test AND client_id IS NOT NULL)",
            name="test_or_client",
        ),
        Index("ix_message_mailing_id_status_id", "mailing_id", "status", "id"),
        Index("ix_message_mailing_id_id", "mailing_id", "id"),
        # The last hour's outcomes per provider (GET /api/v1/providers, migration 0016).
        Index(
            "ix_message_provider_recent",
            "updated_at",
            postgresql_where=sql(
                "provider IS NOT NULL AND status IN ('sent', 'delivered', 'undelivered')"
            ),
        ),
        # What the scheduler leases next: pending messages whose time has come.
        Index(
            "ix_message_due",
            "mailing_id",
            "not_before",
            postgresql_where=sql("status = 'pending'"),
        ),
        # Live leases: the window count and the reaper.
        Index(
            "ix_message_lease_until",
            "lease_until",
            postgresql_where=sql("status IN ('queued', 'sending', 'retrying')"),
        ),
        # Cancelling a deleted client's undelivered messages.
        Index(
            "ix_message_client_id_open",
            "client_id",
            postgresql_where=sql(f"status IN ({OPEN_STATUSES_SQL})"),
        ),
        # Receipts find their message by the provider's id.
        Index(
            "ix_message_provider_message_id",
            "provider_message_id",
            postgresql_where=sql("provider_message_id IS NOT NULL"),
        ),
        {"postgresql_partition_by": "RANGE (mailing_id)"},
    )


# The partitions of `message`: in the database, not in the models (autogenerate skips them).
MESSAGE_PARTITION_NAME = re.compile(r"^message_(legacy|p[0-9]+)$")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """For Alembic's autogenerate (`include_name`): leave the partitions of `message` and
    their indexes out of the comparison with the models."""
    if type_ == "table" and name is not None:
        return MESSAGE_PARTITION_NAME.match(name) is None
    return True


class ClientContact(Base):
    """A client's sent messages per UTC minute of sending, for the frequency caps
    (shared/domain/frequency_cap.py), kept by triggers on `message` (migration 0014)."""

    __tablename__ = "client_contact"

    client_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(TimestampTZ, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class MessageCountFolded(Base):
    """Messages per mailing and status up to the last fold (`message_count_fold()`)."""

    __tablename__ = "message_count_folded"

    mailing_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("mailing.id"), primary_key=True)
    status: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, server_default="0")


class MessageCountDelta(Base):
    """Each status-changing statement's net change per mailing and status, appended by the
    statement-level triggers on `message` (migration 0009) until the next fold."""

    __tablename__ = "message_count_delta"
    __mapper_args__ = {"primary_key": ["mailing_id", "status", "at"]}  # it has none: append-only

    mailing_id: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(Text)
    delta: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())


# Views are read through models of their own metadata, which the migrations check skips.
VIEWS = MetaData()


class MessageCount(Base):
    """Messages per mailing and status, exact at every commit: the view `message_count` sums
    the folded counts and the deltas not yet folded (read-only)."""

    __table__ = Table(
        "message_count",
        VIEWS,
        Column("mailing_id", BigInteger, primary_key=True),
        Column("status", Text, primary_key=True),
        Column("count", BigInteger),
    )

    mailing_id: Mapped[int]
    status: Mapped[str]
    count: Mapped[int]


# --- directory operations (migration 0004) ---


class AuditEntry(Base):
    """One change made through the API or the console, written in the change's transaction."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    actor_name: Mapped[str] = mapped_column(Text)  # the token's name or the user's login
    actor_kind: Mapped[str] = mapped_column(Text)  # token | user
    actor_role: Mapped[str] = mapped_column(Text)  # admin | viewer
    # A console user's identity (migration 0011): the provider's `sub` and issuer, which the
    # user cannot change (the login in actor_name is for display). NULL for tokens.
    actor_subject: Mapped[str | None] = mapped_column(Text)
    actor_issuer: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)  # create, update, delete, pause, sign_in, ...
    target_type: Mapped[str] = mapped_column(Text)  # client, mailing, import, user, ...
    target_id: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    # The request's W3C `traceparent` (tracing on): the scheduler links a mailing's activation
    # to the request that last changed it.
    traceparent: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)  # the client's address
    # The changed fields; never a secret, phones masked (services/api/audit/log.py).
    changes: Mapped[dict[str, object] | None] = mapped_column(JSONB)

    __table_args__ = (
        CheckConstraint("actor_kind IN ('token', 'user')", name="actor_kind_known"),
        # The audit list's filters, each newest first by id (keyset).
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_name_id", "actor_name", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
        Index("ix_audit_log_target_type_target_id_id", "target_type", "target_id", "id"),
    )


class ClientImport(Base):
    """A CSV import of clients (migration 0004): its progress, counts and outcome."""

    __tablename__ = "client_import"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    status: Mapped[str] = mapped_column(Text, server_default="running")
    on_conflict: Mapped[str] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated: Mapped[int] = mapped_column(BigInteger, server_default="0")
    skipped: Mapped[int] = mapped_column(BigInteger, server_default="0")
    rejected: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Imported rows whose phone was written another way (migration 0013).
    normalized: Mapped[int] = mapped_column(BigInteger, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(TimestampTZ)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'done', 'failed')", name="status_known"),
        CheckConstraint("on_conflict IN ('skip', 'update')", name="on_conflict_known"),
        Index(
            "uq_client_import_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=sql("idempotency_key IS NOT NULL"),
        ),
    )


class ClientImportRejection(Base):
    """A CSV row an import refused, with the file's values and why (migration 0004)."""

    __tablename__ = "client_import_rejection"

    import_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("client_import.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    field: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    operator_code: Mapped[str | None] = mapped_column(Text)
    tag: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(Text)
    opted_out: Mapped[str | None] = mapped_column(Text)


class MessageMinute(Base):
    """Messages that reached sent, failed, expired or retrying, per minute and mailing; kept
    by a statement-level trigger on `message` (migration 0005) for the console's dashboard."""

    __tablename__ = "message_minute"

    minute: Mapped[datetime] = mapped_column(TimestampTZ, primary_key=True)
    mailing_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    status: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ProviderStatus(Base):
    """Each sender's circuit-breaker state, reported on change and every few seconds
    (services/sender/status_report.py, migration 0005), for the console's dashboard."""

    __tablename__ = "provider_status"

    instance: Mapped[str] = mapped_column(Text, primary_key=True)  # host:pid of the sender
    breaker_state: Mapped[str] = mapped_column(Text)  # closed | half_open | open
    reason: Mapped[str] = mapped_column(Text, server_default="")
    reported_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())


class MessageReceiptPending(Base):
    """A delivery receipt whose message is not known (yet): it came before the sender wrote
    the provider's id, or for an id never sent. `shared.receipts.match_pending` applies it
    once the message is known, or drops it as unknown after a while (migration 0015)."""

    __tablename__ = "message_receipt_pending"

    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    provider_message_id: Mapped[str] = mapped_column(Text, primary_key=True)
    delivered: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())


class MessageReply(Base):
    """A text from a phone (an SMPP deliver_sm that is not a receipt), migration 0015. The
    client is the live client with that phone, the mailing that client's latest message's;
    `stop`: the text was exactly a stop word and opted the client out."""

    __tablename__ = "message_reply"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    phone: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    client_id: Mapped[int | None] = mapped_column(BigInteger)
    mailing_id: Mapped[int | None] = mapped_column(BigInteger)
    stop: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (Index("ix_message_reply_mailing_id_id", "mailing_id", "id"),)


class ProviderState(Base):
    """Each sender replica's view of each provider (binds, breaker, rate), reported every few
    seconds (shared/provider_state.py, migration 0016), for GET /api/v1/providers."""

    __tablename__ = "provider_state"

    instance: Mapped[str] = mapped_column(Text, primary_key=True)  # host:pid of the sender
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    can_take: Mapped[bool] = mapped_column(Boolean)
    binds_up: Mapped[int | None] = mapped_column(Integer)  # smpp only
    binds: Mapped[int | None] = mapped_column(Integer)
    breaker_state: Mapped[str] = mapped_column(Text, server_default="closed")
    reason: Mapped[str] = mapped_column(Text, server_default="")
    rate: Mapped[float] = mapped_column(Float, server_default="0")  # messages/s it sends there
    reported_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())


class ConsoleSession(Base):
    """A user signed in to the console (migration 0003). The cookie carries a random token;
    `id` is its SHA-256, so the table alone cannot be replayed as cookies."""

    __tablename__ = "console_session"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text)  # the provider's `sub`
    login: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text, server_default="")
    email: Mapped[str] = mapped_column(Text, server_default="")
    role: Mapped[str] = mapped_column(Text)
    id_token: Mapped[str | None] = mapped_column(Text)  # the logout hint for the provider
    csrf_token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(TimestampTZ)
    user_agent: Mapped[str] = mapped_column(Text, server_default="")
    address: Mapped[str] = mapped_column(Text, server_default="")
    # The provider's refresh (or access) token, sealed with a key from the cookie's token
    # (services/api/ui/auth/recheck.py); and when the groups were last read (migration 0011).
    provider_tokens: Mapped[str | None] = mapped_column(Text)
    groups_checked_at: Mapped[datetime | None] = mapped_column(TimestampTZ)

    __table_args__ = (
        CheckConstraint("role IN ('admin', 'viewer')", name="role"),
        # One's own sessions (the sessions page, "sign out everywhere").
        Index("ix_console_session_subject", "subject"),
        # Deleting the expired ones.
        Index("ix_console_session_expires_at", "expires_at"),
    )
