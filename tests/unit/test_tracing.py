"""Tracing rules (shared/tracing.py) with the SDK's in-memory exporter: a mailing's trace ids,
propagation through AMQP headers, span attributes and links, sampling, and nothing at all
while OTEL_EXPORTER_OTLP_ENDPOINT is unset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from tests.support.database import ROOT

DB_URL = "postgresql+psycopg://postgres:secret@db.example:5432/mailing"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    exporter = InMemorySpanExporter()
    provider = tracing.configure_tracing(tracing.SCHEDULER, DB_URL, "mailing", exporter=exporter)
    assert provider is not None
    try:
        yield exporter
    finally:
        tracing.uninstall()


def _finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_mailings_trace_ids_are_its_own_and_the_same_everywhere() -> None:
    seed = tracing.deployment_seed(DB_URL, "mailing")
    assert tracing.mailing_ids(seed, 7) == tracing.mailing_ids(seed, 7)
    assert tracing.mailing_ids(seed, 7) != tracing.mailing_ids(seed, 8)
    # Mailing 7 of another database or namespace is another trace.
    for other in (
        tracing.deployment_seed(DB_URL.replace("/mailing", "/staging"), "mailing"),
        tracing.deployment_seed(DB_URL, "test-1234"),
    ):
        assert tracing.mailing_ids(other, 7)[0] != tracing.mailing_ids(seed, 7)[0]
    # A password change (or the password at all) has no say.
    assert seed == tracing.deployment_seed(DB_URL.replace("secret", "rotated"), "mailing")
    assert b"secret" not in seed


def test_activation_is_the_root_and_later_spans_hang_under_it(
    spans: InMemorySpanExporter,
) -> None:
    request = trace.get_tracer("test", tracer_provider=tracing.provider())
    with request.start_as_current_span("POST /api/v1/mailings") as request_span:
        headers = tracing.inject_current()
    created_by = tracing.extract(headers)

    t0 = tracing.now_ns()
    tracing.record_activation(42, t0, t0 + 1000, created_by)
    tracing.record_mailing_span(
        tracing.FANOUT, 42, t0 + 2000, t0 + 3000, {"mailing.messages.created": 1000}
    )
    (activation,) = _finished(spans, tracing.ACTIVATE)
    (chunk,) = _finished(spans, tracing.FANOUT)

    seed = tracing.deployment_seed(DB_URL, "mailing")
    trace_id, span_id = tracing.mailing_ids(seed, 42)
    assert activation.context.trace_id == trace_id
    assert activation.context.span_id == span_id
    assert activation.parent is None
    assert (activation.start_time, activation.end_time) == (t0, t0 + 1000)
    assert activation.attributes == {"mailing.id": 42}
    # Linked to the request that created it (a trace of its own).
    assert [link.context.span_id for link in activation.links] == [
        request_span.get_span_context().span_id
    ]
    assert chunk.context.trace_id == trace_id
    assert chunk.parent is not None and chunk.parent.span_id == span_id
    assert chunk.attributes == {"mailing.id": 42, "mailing.messages.created": 1000}
    assert activation.resource.attributes["service.name"] == "mailing-scheduler"
    # Only the activation took the derived ids; every other span gets random ones.
    assert chunk.context.span_id != span_id


def test_the_job_headers_carry_the_publish_span_to_the_sender(
    spans: InMemorySpanExporter,
) -> None:
    publish = tracing.PublishSpans("ns.send", [5, 6, 5])
    headers_5 = tracing.extract(publish.headers(5))
    # aio-pika may hand header values back as bytes.
    raw = {k: v.encode() for k, v in publish.headers(6).items()}
    headers_6 = tracing.extract({"mailing_id": 6, **raw})
    publish.end(failed=[6])
    by_mailing = {s.attributes["mailing.id"]: s for s in _finished(spans, "publish ns.send")}
    assert by_mailing[5].kind is SpanKind.PRODUCER
    assert by_mailing[5].attributes["messaging.batch.message_count"] == 2
    assert by_mailing[5].attributes["messaging.destination.name"] == "ns.send"
    assert by_mailing[5].status.status_code is StatusCode.UNSET
    assert by_mailing[6].status.status_code is StatusCode.ERROR
    seed = tracing.deployment_seed(DB_URL, "mailing")
    for mailing_id, span in by_mailing.items():
        trace_id, root = tracing.mailing_ids(seed, mailing_id)
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == root

    # The sender: a claim batch under the first job's publish span, linked to the other one.
    with tracing.span("claim batch", parent=headers_5, links=[headers_6], kind=SpanKind.CONSUMER):
        # A message of job 5: under the batch; a message of job 6: under its own publish span.
        for context in (headers_5, headers_6):
            with tracing.span("POST /send/{msgId}", parent=tracing.parent_for(context)):
                pass
    (batch,) = _finished(spans, "claim batch")
    requests = _finished(spans, "POST /send/{msgId}")
    assert batch.parent is not None and batch.parent.span_id == by_mailing[5].context.span_id
    assert batch.context.trace_id == by_mailing[5].context.trace_id
    assert [link.context.span_id for link in batch.links] == [by_mailing[6].context.span_id]
    assert requests[0].parent is not None
    assert requests[0].parent.span_id == batch.context.span_id
    assert requests[1].parent is not None
    assert requests[1].parent.span_id == by_mailing[6].context.span_id
    assert requests[1].context.trace_id == by_mailing[6].context.trace_id


def test_headers_without_a_trace_context_extract_to_none(spans: InMemorySpanExporter) -> None:
    assert tracing.extract(None) is None
    assert tracing.extract({"mailing_id": 1, "request_id": "r"}) is None
    assert tracing.extract({"traceparent": "garbage"}) is None


def test_retry_jobs_carry_the_mailings_root(spans: InMemorySpanExporter) -> None:
    context = tracing.extract(tracing.mailing_headers(9))
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    seed = tracing.deployment_seed(DB_URL, "mailing")
    assert (parent.trace_id, parent.span_id) == tracing.mailing_ids(seed, 9)


def test_provider_request_attributes_follow_the_http_client_conventions(
    spans: InMemorySpanExporter,
) -> None:
    target = tracing.HttpTarget.of("https://probe.example/v1")
    attributes = tracing.provider_request_attributes(target, "https://probe.example/v1/", 3, 77)
    with tracing.span("POST /send/{msgId}", kind=SpanKind.CLIENT, attributes=attributes) as ok:
        assert ok is not None
        tracing.provider_answer(ok, "sent", None, 200)
    with tracing.span("POST /send/{msgId}", kind=SpanKind.CLIENT, attributes=attributes) as bad:
        assert bad is not None
        tracing.provider_answer(bad, "retry", "HTTP 503: b'busy'", 503)
    sent, retried = _finished(spans, "POST /send/{msgId}")
    assert sent.attributes is not None
    assert dict(sent.attributes) == {
        "http.request.method": "POST",
        "url.full": "https://probe.example/v1/send/77",
        "url.template": "/send/{msgId}",
        "url.scheme": "https",
        "server.address": "probe.example",
        "server.port": 443,
        "mailing.id": 3,
        "message.id": 77,
        "mailing.send.outcome": "sent",
        "http.response.status_code": 200,
    }
    assert sent.status.status_code is StatusCode.UNSET
    assert retried.attributes is not None and retried.attributes["error.type"] == "retry"
    assert retried.attributes["http.response.status_code"] == 503
    assert retried.status.status_code is StatusCode.ERROR
    assert retried.status.description == "HTTP 503: b'busy'"


def test_an_api_request_that_changed_a_mailing_links_to_its_trace(
    spans: InMemorySpanExporter,
) -> None:
    tracer = trace.get_tracer("test", tracer_provider=tracing.provider())
    with tracer.start_as_current_span("POST /api/v1/mailings"):
        tracing.link_to_mailing(11)
    (request,) = _finished(spans, "POST /api/v1/mailings")
    seed = tracing.deployment_seed(DB_URL, "mailing")
    assert request.attributes == {"mailing.id": 11}
    assert [(link.context.trace_id, link.context.span_id) for link in request.links] == [
        tracing.mailing_ids(seed, 11)
    ]


def test_a_mailing_is_sampled_whole_or_not_at_all() -> None:
    """parentbased_traceidratio: the root's ratio decision, taken from the mailing's derived
    trace id, is what every later span of the mailing follows, in any process."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(0.5)), id_generator=tracing.mailing_id_generator()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider, b"seed")
    try:
        t0 = tracing.now_ns()
        for mailing_id in range(1, 101):
            tracing.record_activation(mailing_id, t0, t0 + 1)
            tracing.record_mailing_span(tracing.LEASE, mailing_id, t0 + 2, t0 + 3)
            publish = tracing.PublishSpans("send", [mailing_id])
            with tracing.span("claim batch", parent=tracing.extract(publish.headers(mailing_id))):
                pass
            publish.end()
    finally:
        tracing.uninstall()
    finished = exporter.get_finished_spans()
    roots = {s.attributes["mailing.id"] for s in finished if s.name == tracing.ACTIVATE}
    assert 25 < len(roots) < 75  # about half
    for name in (tracing.LEASE, "publish send"):
        assert {s.attributes["mailing.id"] for s in finished if s.name == name} == roots
    assert len([s for s in finished if s.name == "claim batch"]) == len(roots)


def test_off_helpers_do_nothing() -> None:
    assert not tracing.enabled()
    assert tracing.provider() is None
    assert tracing.inject_current() == {}
    assert tracing.mailing_headers(1) == {}
    assert tracing.mailing_context(1) is None
    assert tracing.extract({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
    with tracing.span("anything") as span:
        assert span is None
    publish = tracing.PublishSpans("send", [1])
    assert publish.headers(1) == {}
    publish.end()
    tracing.record_activation(1, 0, 1)


def test_without_an_endpoint_no_provider_and_no_exporter_is_installed() -> None:
    """A real process start as the services do it: the global tracer provider stays the API's
    proxy (no-op), no SDK provider or exporter exists, the API app gets no tracing middleware."""
    script = """
import gc, json, sys
from opentelemetry import trace
from pydantic import SecretStr
from shared import tracing
from shared.settings import ApiSettings
from services.api.app import create_app
installed = tracing.configure_tracing(tracing.API, "postgresql+psycopg://h/db", "ns")
app = create_app(ApiSettings(api_tokens=[SecretStr("t")]))
app.build_middleware_stack()
otel_modules = sorted(
    m for m in sys.modules if m.split(".")[1:2] in (["sdk"], ["exporter"], ["instrumentation"])
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
gc.collect()
print(json.dumps({
    "installed": installed is not None,
    "enabled": tracing.enabled(),
    "global": type(trace.get_tracer_provider()).__name__,
    "sdk_providers": sum(isinstance(o, TracerProvider) for o in gc.get_objects()),
    "exporters": sum(isinstance(o, SpanExporter) for o in gc.get_objects()),
    "instrumented": hasattr(app, "_original_build_middleware_stack"),
    "otel_modules": otel_modules,
}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {
        "installed": False,
        "enabled": False,
        "global": "ProxyTracerProvider",
        "sdk_providers": 0,
        "exporters": 0,
        "instrumented": False,
        # Not even imported: the SDK, the OTLP exporter, the FastAPI instrumentation.
        "otel_modules": [],
    }


def test_attributes_given_as_a_function_are_built_only_for_a_recorded_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(0.01)), id_generator=tracing.mailing_id_generator()
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider, b"seed")
    built: list[int] = []

    def attributes(mailing_id: int) -> dict[str, int]:
        built.append(mailing_id)
        return {"mailing.id": mailing_id}

    try:
        by_sampling = {
            tracing.mailing_span_context(m).trace_flags.sampled: m for m in range(1, 2000)
        }
        for mailing_id in by_sampling.values():
            with tracing.span(
                "POST /send/{msgId}",
                parent=tracing.mailing_context(mailing_id),
                attributes=lambda m=mailing_id: attributes(m),
            ):
                pass
    finally:
        tracing.uninstall()
    assert built == [by_sampling[True]]
    (span,) = exporter.get_finished_spans()
    assert span.attributes == {"mailing.id": by_sampling[True]}
