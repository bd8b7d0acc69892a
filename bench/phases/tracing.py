"""Phase `tracing`: what OpenTelemetry tracing costs. One mailing through the real processes
(stub at 0 ms) with tracing off (OTEL_EXPORTER_OTLP_ENDPOINT unset) and on at 1% sampling
(`parentbased_traceidratio`, 0.01) exporting to a local OTLP/HTTP receiver, alternated for a
few rounds; then one run at 100% (`parentbased_always_on`), the price of a traced mailing.
Beside them, the time the off path adds per message, timed in this process."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from bench.context import Bench, log
from bench.format import Report, fmt, table
from bench.result import PhaseResult
from shared import tracing
from tests.support.otlp import OtlpSink

PROCS = ("sender", "scheduler", "api", "rabbitmq", "postgres_db")
VARIANTS = {
    "off": {},
    "on, 1%": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    },
    "on, 100%": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}


@dataclass(kw_only=True)
class TracingResult(PhaseResult):
    key = "tracing"
    messages: int
    rounds: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    off_path_ns_per_message: float | None = None
    unsampled_ns_per_message: float | None = None
    sampled_ns_per_message: float | None = None

    def variant_means(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for label in VARIANTS:
            runs = [r for r in self.runs if r["variant"] == label]
            if not runs:
                continue
            out[label] = {
                "runs": len(runs),
                "rate": mean(r["rate"] for r in runs),
                "steady_rate": mean(r["steady_rate"] or 0 for r in runs),
                "cpu": {p: mean(r["cpu_ms_per_msg"].get(p) or 0 for r in runs) for p in PROCS},
                "spans": sum(r["spans"] for r in runs),
                "sampled_mailings": sum(bool(r["mailing_spans"]) for r in runs),
                "load": [r["load"][0] for r in runs],
            }
        return out

    def render(self, report: Report) -> None:
        means = self.variant_means()
        if not means:
            return
        off = means.get("off")
        rows = []
        for label, m in means.items():
            cpu = m["cpu"]
            traced = sum(cpu[p] for p in ("sender", "scheduler", "api"))
            base = sum(off["cpu"][p] for p in ("sender", "scheduler", "api")) if off else None
            rows.append(
                [
                    f"`{label}`",
                    m["runs"],
                    f"**{fmt(m['rate'])}**",
                    fmt(m["steady_rate"]),
                    f"{m['rate'] / off['rate']:.2f}" if off else "-",
                    fmt(cpu["sender"], 3),
                    fmt(cpu["scheduler"], 3),
                    fmt(traced - base, 3) if base is not None else "-",
                    fmt(m["spans"], 0),
                    f"{m['sampled_mailings']} / {m['runs']}",
                    " / ".join(f"{x:.1f}" for x in m["load"]),
                ]
            )
        report.add(
            f"## Tracing cost ({fmt(self.messages)} messages per run, stub at 0 ms)\n\n"
            "One mailing through the real api, scheduler and sender (tuned settings, "
            "`LOG_LEVEL=WARNING`): tracing **off** (`OTEL_EXPORTER_OTLP_ENDPOINT` unset: no SDK "
            "provider), **on at 1%** (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, "
            "`OTEL_TRACES_SAMPLER_ARG=0.01`) and, once, **on at 100%** "
            "(`parentbased_always_on`), exporting over OTLP/HTTP to a receiver in the bench "
            f"process (tests/support/otlp.py). Off and 1% alternate for {self.rounds} "
            "round(s); figures are means over a variant's runs. A mailing is sampled whole or "
            "not at all (its trace id, derived from the mailing, decides): at 1% the mailing "
            "of a run is almost never sampled, so the 1% runs measure the path of a mailing "
            "left out (a non-recording publish span and a `traceparent` per job), and the 1% "
            'of mailings that are sampled cost what the 100% row shows. "sampled" counts '
            "the runs whose mailing was traced; spans are every span the receiver got "
            "(the API's create request is a trace of its own, sampled at the same ratio). "
            "On a shared machine (see the load column) msg/s follows the other load more than "
            "tracing: read the CPU columns.\n\n"
            + table(
                (
                    "tracing | runs | msg/s | steady msg/s | vs off | sender CPU ms/msg | "
                    "scheduler | api + scheduler + sender vs off, ms/msg | spans | "
                    "sampled | 1-min load"
                ),
                rows,
            )
            + "\n\n"
            + self.render_in_process(off)
        )

    def render_in_process(self, off: dict[str, Any] | None) -> str:
        """The per-message CPU of each path, timed in the bench process: steadier than the
        end-to-end runs on a shared machine."""
        paths = (self.off_path_ns_per_message, self.unsampled_ns_per_message)
        sampled = self.sampled_ns_per_message
        if any(p is None for p in paths) or sampled is None:
            return ""
        off_ns, unsampled_ns = paths
        assert off_ns is not None and unsampled_ns is not None
        at_1 = unsampled_ns * 0.99 + sampled * 0.01
        sender_ms = off["cpu"]["sender"] if off else None

        def share(ns: float) -> str:
            return f"{ns / 1e6 / sender_ms * 100:.2f}%" if sender_ms else "-"

        rows = [
            ["off (no SDK provider)", f"{off_ns / 1000:.2f}", share(off_ns)],
            [
                "on, a mailing left out by the sampler",
                f"{unsampled_ns / 1000:.2f}",
                share(unsampled_ns),
            ],
            [
                "on, a sampled mailing (spans encoded as OTLP protobuf)",
                f"{sampled / 1000:.1f}",
                share(sampled),
            ],
            [
                "**on at 1%, expected** (0.99 x left out + 0.01 x sampled)",
                f"**{at_1 / 1000:.2f}**",
                share(at_1),
            ],
        ]
        return (
            "The same paths timed in-process (`bench/phases/tracing.py`): the tracing calls the "
            "scheduler and the sender make per message (per job of 50 and per batch of 100 "
            "shared out; the sampled path's batch export thread included), as CPU µs per "
            "message, and as a share of the sender's CPU per message in the off runs above. "
            "Under a parent-based sampler a span whose parent is not sampled is not even "
            "started, so a mailing the sampler left out costs a publish span per job, its "
            "`traceparent` header and its extraction.\n\n"
            + table("path | CPU µs per message | of the sender's CPU per message", rows)
        )


def off_path_ns_per_message(iterations: int = 200_000, per_job: int = 50) -> float:
    """What the code paths run while tracing is off, per message: the sender's request span
    and batch check; per job, shared out: extracting headers, the publish spans and their
    headers, the scheduler's timestamps and span records."""
    assert not tracing.enabled(), "the bench process itself never turns tracing on"
    headers: dict[str, Any] = {"mailing_id": 1, "request_id": "r"}
    started = time.perf_counter_ns()
    for i in range(iterations):
        if not tracing.enabled():
            with tracing.OFF:
                pass
        if i % per_job == 0:
            tracing.extract(headers)
            t0 = tracing.now_ns()
            tracing.record_mailing_span(tracing.LEASE, 1, t0, tracing.now_ns())
            spans = tracing.PublishSpans("send", [1])
            headers | spans.headers(1)
            spans.end(())
            with tracing.OFF:
                pass
    traced = time.perf_counter_ns() - started
    # The same loop without the tracing calls: what is left is theirs.
    started = time.perf_counter_ns()
    for i in range(iterations):
        if i % per_job == 0:
            headers | {}
    bare = time.perf_counter_ns() - started
    return max(traced - bare, 0) / iterations


def on_path_ns_per_message(
    sampled: bool, messages: int = 20_000, per_job: int = 50, per_batch: int = 100
) -> float:
    """CPU (this process, the exporting thread included) per message of the spans a mailing
    makes with tracing on: per job a publish span and its headers extracted again, per batch a
    claim span, per message a provider request span; `sampled` False is the 99% of mailings a
    1% ratio leaves out. Sampled spans are encoded to OTLP protobuf, as the exporter would."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
    from opentelemetry.trace import SpanKind

    class EncodeOnly(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    sampler = ParentBased(ALWAYS_ON) if sampled else ParentBased(TraceIdRatioBased(0.01))
    provider = TracerProvider(sampler=sampler, id_generator=tracing.mailing_id_generator())
    provider.add_span_processor(BatchSpanProcessor(EncodeOnly(), max_queue_size=100_000))
    tracing.install(provider, b"bench")
    try:
        mailing_id = next(
            m
            for m in range(1, 10_000)
            if tracing.mailing_span_context(m).trace_flags.sampled is sampled
        )
        target = tracing.HttpTarget.of("http://127.0.0.1:8090")
        started = time.process_time_ns()
        context = None
        batch: Any = tracing.OFF
        for i in range(messages):
            if i % per_job == 0:
                spans = tracing.PublishSpans("send", [mailing_id])
                context = tracing.extract({"mailing_id": mailing_id} | spans.headers(mailing_id))
                spans.end()
            if i % per_batch == 0:
                batch.__exit__(None, None, None)
                batch = tracing.span("claim batch", parent=context, kind=SpanKind.CONSUMER)
                batch.__enter__()
            with tracing.span(
                "POST /send/{msgId}",
                parent=tracing.parent_for(context),
                kind=SpanKind.CLIENT,
                attributes=lambda i=i: tracing.provider_request_attributes(
                    target, "http://127.0.0.1:8090", mailing_id, i
                ),
            ) as request:
                if request is not None:
                    tracing.provider_answer(request, "sent", None, 200)
        batch.__exit__(None, None, None)
        provider.force_flush()
        return (time.process_time_ns() - started) / messages
    finally:
        provider.shutdown()
        tracing.uninstall()


async def traced_run(
    bench: Bench, index: int, label: str, messages: int, sink: OtlpSink
) -> dict[str, Any]:
    from bench.system import load_average

    assert bench.stub_ctl is not None
    await bench.reset_messages()
    await bench.stub_ctl.reset(0.0)
    otel = VARIANTS[label]
    common_env = (
        otel | {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "1000"}
        if otel
        else {}
    )
    spans_before = len(sink.spans)
    load = [round(load_average()[0], 2)]
    dep = bench.deployment(f"tracing-{index}", common_env=common_env)
    dep.ready_timeout_s = 180.0
    dep = await bench.deploy(dep)
    try:
        result = await bench.run_to_completion(dep, messages, timeout=max(120.0, messages / 50))
    finally:
        await bench.undeploy(dep)  # each process flushes its spans as it stops
    load.append(round(load_average()[0], 2))
    received = sink.spans[spans_before:]
    mailing_spans = [s for s in received if s.attributes.get("mailing.id") == result["mailing_id"]]
    return {
        "variant": label,
        "rate": result["rate"],
        "steady_rate": result["steady_rate"],
        "seconds": result["seconds"],
        "sent": result["sent"],
        "cpu_ms_per_msg": result["cpu_ms_per_msg"],
        "spans": len(received),
        "spans_by_service": dict(Counter(s.service for s in received)),
        "mailing_spans": len(mailing_spans),
        "load": load,
    }


async def run(bench: Bench) -> TracingResult:
    messages = min(bench.args.tracing_messages, bench.args.clients)
    rounds = bench.args.tracing_rounds
    await bench.reset_messages(clients=True)
    await bench.seed_clients(messages)
    out = bench.keep(TracingResult(messages=messages, rounds=rounds))
    out.off_path_ns_per_message = round(off_path_ns_per_message(), 1)
    out.unsampled_ns_per_message = round(on_path_ns_per_message(sampled=False), 1)
    out.sampled_ns_per_message = round(on_path_ns_per_message(sampled=True), 1)
    sink = await OtlpSink().start()
    try:
        order = [label for _ in range(rounds) for label in ("off", "on, 1%")] + ["on, 100%"]
        for index, label in enumerate(order):
            run = await traced_run(bench, index, label, messages, sink)
            out.runs.append(run)
            log(
                f"  tracing {label}: {run['rate']}/s (steady {run['steady_rate']}/s), "
                f"{run['spans']} spans, sender {run['cpu_ms_per_msg'].get('sender')} ms/msg"
            )
    finally:
        await sink.close()
    return out
