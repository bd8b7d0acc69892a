"""OpenTelemetry tracing for every process: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off, no SDK provider is installed and the helpers return at once. On, spans go over OTLP/HTTP
(the SDK's exporter and its OTEL_* variables). One mailing is one trace: its root, the
scheduler's activation span, has ids derived from the mailing and the deployment
(`mailing_ids`), so any scheduler replica can hang fan-out chunks and leases under it without
storing anything; send jobs carry the trace context in their AMQP headers for the sender. The
API request that created or changed a mailing is its own trace, linked both ways
(docs/TRACING.md).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    # The SDK, the exporter and the propagators are imported only when tracing is on.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

API, SCHEDULER, SENDER = "mailing-api", "mailing-scheduler", "mailing-sender"
ACTIVATE = "mailing activate"
FANOUT = "mailing fan-out chunk"
LEASE = "mailing lease"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
MAILING_ID, MESSAGE_ID = "mailing.id", "message.id"

# (trace id, span id) the next root span takes instead of random ones (see MailingIds).
_forced_ids: ContextVar[tuple[int, int] | None] = ContextVar("forced_ids", default=None)


def mailing_id_generator() -> Any:
    """The SDK's random ids, except for the one span started while `_forced_ids` is set: a
    mailing's activation span takes the ids derived from the mailing."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class MailingIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            forced = _forced_ids.get()
            return forced[0] if forced else super().generate_trace_id()

        def generate_span_id(self) -> int:
            forced = _forced_ids.get()
            return forced[1] if forced else super().generate_span_id()

        def is_trace_id_random(self) -> bool:
            return _forced_ids.get() is None

    return MailingIds()


@dataclass
class _Tracing:
    provider: TracerProvider
    tracer: trace.Tracer
    seed: bytes
    # The sampler never records a child of an unsampled parent (every parent-based sampler
    # as the SDK builds them from OTEL_TRACES_SAMPLER): such spans need not even be started.
    skip_unsampled: bool = False


def _follows_unsampled_parents(sampler: object) -> bool:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    return isinstance(sampler, ParentBased) and all(
        getattr(sampler, name, None) is ALWAYS_OFF
        for name in ("_remote_parent_not_sampled", "_local_parent_not_sampled")
    )


_active: _Tracing | None = None


def endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def deployment_seed(database_url: str, namespace: str) -> bytes:
    """What makes mailing 7 of this deployment another trace than mailing 7 of another one:
    the database's host, port and name and the AMQP namespace (never a password)."""
    url = make_url(database_url)
    return f"{url.host}:{url.port}/{url.database}|{namespace}".encode()


def configure_tracing(
    service_name: str,
    database_url: str,
    namespace: str,
    *,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """At process start: install the SDK provider when an OTLP endpoint is set (or, in tests,
    an `exporter` is given); otherwise install nothing and return None."""
    if exporter is None and not endpoint_configured():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the service's default name.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    # No sampler given: the SDK reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
    provider = TracerProvider(
        resource=Resource.create(attributes), id_generator=mailing_id_generator()
    )
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    install(provider, deployment_seed(database_url, namespace))
    return provider


def install(provider: TracerProvider, seed: bytes) -> None:
    """Make `provider` the one this module's spans go to (tests install their own)."""
    global _active
    _active = _Tracing(
        provider,
        provider.get_tracer("mailing-service"),
        seed,
        skip_unsampled=_follows_unsampled_parents(provider.sampler),
    )


def uninstall() -> None:
    global _active
    _active = None


def shutdown() -> None:
    """Flush what is buffered (at process exit)."""
    if _active is not None:
        _active.provider.shutdown()


def flush() -> None:
    """Export what is buffered now (the API at shutdown: uvicorn re-raises SIGTERM, so no
    exit handler of ours runs after it)."""
    if _active is not None:
        _active.provider.force_flush()


def enabled() -> bool:
    return _active is not None


def provider() -> TracerProvider | None:
    return _active.provider if _active is not None else None


def now_ns() -> int:
    return time.time_ns()


# --- a mailing's trace ---------------------------------------------------------------------


def mailing_ids(seed: bytes, mailing_id: int) -> tuple[int, int]:
    """The trace id and root span id of a mailing's trace: a hash, so uniform enough for
    trace-id ratio sampling, and the same in every process of one deployment."""
    digest = hashlib.sha256(seed + b"|mailing|" + str(mailing_id).encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def mailing_span_context(mailing_id: int) -> SpanContext:
    """The activation span of `mailing_id` (the root of its trace) as a remote parent, with the
    sampler's own decision for that root, so its children follow it under a parent-based
    sampler."""
    assert _active is not None
    trace_id, span_id = mailing_ids(_active.seed, mailing_id)
    decision = _active.provider.sampler.should_sample(None, trace_id, ACTIVATE).decision
    flags = TraceFlags(TraceFlags.SAMPLED if decision.is_sampled() else TraceFlags.DEFAULT)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def mailing_context(mailing_id: int) -> Context | None:
    """A context whose parent is the mailing's root span; None when tracing is off."""
    if _active is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(mailing_span_context(mailing_id)), Context())


def record_activation(
    mailing_id: int, start_ns: int, end_ns: int, created_by: Context | None = None
) -> None:
    """The root span of a mailing's trace, for the claim that started it; linked to the API
    request whose event this scheduler received, when it did."""
    if _active is None:
        return
    links = []
    if created_by is not None:
        request = trace.get_current_span(created_by).get_span_context()
        if request.is_valid:
            links.append(Link(request, {"link.reason": "mailing change request"}))
    token = _forced_ids.set(mailing_ids(_active.seed, mailing_id))
    try:
        span = _active.tracer.start_span(
            ACTIVATE,
            context=Context(),
            kind=SpanKind.INTERNAL,
            attributes={MAILING_ID: mailing_id},
            links=links,
            start_time=start_ns,
        )
    finally:
        _forced_ids.reset(token)
    span.end(end_time=end_ns)


def record_mailing_span(
    name: str,
    mailing_id: int,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A finished piece of a mailing's work (a fan-out chunk, its share of a lease), as a child
    of its root: the mailing is known only once the statement returned."""
    if _active is None:
        return
    span = _active.tracer.start_span(
        name,
        context=mailing_context(mailing_id),
        attributes={MAILING_ID: mailing_id, **(attributes or {})},
        start_time=start_ns,
    )
    span.end(end_time=end_ns)


class PublishSpans:
    """One producer span per mailing around the publish of its send jobs; each job's headers
    carry its mailing's span as W3C trace context. Does nothing while tracing is off."""

    def __init__(self, destination: str, job_mailings: Iterable[int]) -> None:
        """`job_mailings`: the mailing of each job (not even read while tracing is off)."""
        self.spans: dict[int, Span] = {}
        if _active is None:
            return
        for mailing_id, jobs in Counter(job_mailings).items():
            self.spans[mailing_id] = _active.tracer.start_span(
                f"publish {destination}",
                context=mailing_context(mailing_id),
                kind=SpanKind.PRODUCER,
                attributes={
                    MAILING_ID: mailing_id,
                    "messaging.system": "rabbitmq",
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "publish",
                    "messaging.destination.name": destination,
                    "messaging.batch.message_count": jobs,
                },
            )

    def headers(self, mailing_id: int) -> dict[str, str]:
        span = self.spans.get(mailing_id)
        if span is None:
            return {}
        return _inject({}, trace.set_span_in_context(span, Context()))

    def end(self, failed: Iterable[int] = ()) -> None:
        if not self.spans:
            return
        failed = set(failed)
        for mailing_id, span in self.spans.items():
            if mailing_id in failed:
                span.set_status(Status(StatusCode.ERROR, "publish not confirmed"))
            span.end()


# --- propagation across RabbitMQ -----------------------------------------------------------


class _HeadersGetter(Getter[Mapping[str, Any]]):
    """AMQP headers: values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            value = value.decode("ascii", "replace")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeadersGetter()


def _inject(carrier: dict[str, str], context: Context | None = None) -> dict[str, str]:
    from opentelemetry import propagate

    propagate.inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, Any] | None) -> Context | None:
    """The trace context an AMQP message carries; None when tracing is off or it has none."""
    if _active is None or not headers:
        return None
    from opentelemetry import propagate

    context = propagate.extract(headers, getter=_GETTER)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject_current() -> dict[str, str]:
    """The current span's W3C trace context as headers ({} when off)."""
    if _active is None:
        return {}
    return _inject({})


def mailing_headers(mailing_id: int) -> dict[str, str]:
    """Headers that place what a job leads to under the mailing's root (retry jobs)."""
    if _active is None:
        return {}
    return _inject({}, mailing_context(mailing_id))


def parent_for(remote: Context | None) -> Context | None:
    """Where a span of work brought by `remote` belongs: under the current span when that is
    already in `remote`'s trace (None: the current context), else under `remote` itself."""
    if remote is None:
        return None
    theirs = trace.get_current_span(remote).get_span_context()
    ours = trace.get_current_span().get_span_context()
    return None if ours.is_valid and ours.trace_id == theirs.trace_id else remote


def link_to_mailing(mailing_id: int) -> None:
    """On the current span (an API request that changed the mailing): its id, and a link to
    the mailing's trace."""
    if _active is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(MAILING_ID, mailing_id)
    span.add_link(mailing_span_context(mailing_id), {"link.reason": "mailing trace"})


# --- spans around calls --------------------------------------------------------------------


SpanScope = AbstractContextManager[Span | None]
Attributes = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None
# What `span` gives while tracing is off: reusable, and nearly free to enter.
OFF: SpanScope = nullcontext(None)


def span(
    name: str | None,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    links: Iterable[Context] = (),
) -> SpanScope:
    """A current span around a block (None while tracing is off, or no `name`); `parent` None
    means the current context. `links`: contexts of other work this block also serves.
    `attributes` may be a function: called only when the span records (is sampled)."""
    if _active is None or name is None:
        return OFF
    if _active.skip_unsampled:
        context = trace.get_current_span(parent).get_span_context()
        if context.is_valid and not context.trace_flags.sampled:
            return OFF  # would be a non-recording span: the 99% of mailings at 1%
    return _span(_active, name, parent, kind, attributes, links)


@contextmanager
def _span(
    active: _Tracing,
    name: str,
    parent: Context | None,
    kind: SpanKind,
    attributes: Attributes,
    links: Iterable[Context],
) -> Iterator[Span | None]:
    span_links = [
        Link(trace.get_current_span(c).get_span_context())
        for c in links
        if trace.get_current_span(c).get_span_context().is_valid
    ]
    lazy = attributes if callable(attributes) else None
    with active.tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=None if lazy else attributes,  # type: ignore[arg-type]
        links=span_links,
    ) as current:
        if lazy is not None and current.is_recording():
            current.set_attributes(lazy())
        yield current


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """Where a client sends, for the HTTP client span's attributes."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> HttpTarget:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname or "", port)


def provider_request_attributes(
    target: HttpTarget, base_url: str, mailing_id: int, message_id: int
) -> dict[str, Any]:
    return {
        "http.request.method": "POST",
        "url.full": f"{base_url.rstrip('/')}/send/{message_id}",
        "url.template": "/send/{msgId}",
        "url.scheme": target.scheme,
        "server.address": target.host,
        "server.port": target.port,
        MAILING_ID: mailing_id,
        MESSAGE_ID: message_id,
    }


def provider_answer(span: Span, outcome: str, error: str | None, status: int | None) -> None:
    """What the provider's answer meant (and its HTTP status, when it answered); anything but
    "sent" marks the span an error."""
    span.set_attribute("mailing.send.outcome", outcome)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if outcome != "sent":
        span.set_attribute("error.type", outcome)
        span.set_status(Status(StatusCode.ERROR, (error or outcome)[:200]))
