"""Phase `broker`: confirmed publishes and consume + ack through aio-pika to a quorum queue
declared like the send queue (bench/broker.py in a subprocess)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from bench.context import AMQP_URL, Bench, log
from bench.format import Report, fmt, table
from bench.result import PhaseResult
from shared.settings import SchedulerSettings


@dataclass(kw_only=True)
class BrokerResult(PhaseResult):
    key = "broker"
    batch: int
    publish_sequential: dict[str, Any]
    publish_gathered: dict[str, Any]
    consume_ack: dict[str, Any]
    consume_ack_multiple: dict[str, Any] | None = None

    def render(self, report: Report) -> None:
        b = self.body()
        rows = []
        for key, name in (
            ("publish_sequential", "confirmed publish, one await at a time"),
            ("publish_gathered", f"confirmed publish, gathered batches of {b['batch']}"),
            ("consume_ack", "consume + ack one by one (prefetch 512)"),
            ("consume_ack_multiple", "consume + ack `multiple=True` once per 100"),
        ):
            if key not in b:
                continue
            x = b[key]
            rows.append(
                [
                    name,
                    fmt(x["messages"]),
                    fmt(x["rate"]),
                    fmt(x["client_cpu_ms_per_msg"], 3),
                    fmt(x["broker_cpu_ms_per_msg"], 3),
                ]
            )
        text = (
            "## Broker (aio-pika, one process, a quorum queue)\n\n"
            "Persistent job-sized messages to a quorum queue declared like the send queue.\n\n"
            + table("step | messages | msg/s | client CPU ms/msg | RabbitMQ CPU ms/msg", rows)
        )
        best = report.run("0ms-warning")
        if best:
            per = best["cpu_ms_per_msg"]
            total = report.cpu_total_ms(best)
            share = (per.get("rabbitmq") or 0) / total * 100 if total else None
            text += (
                f"\n\nIn the `0ms-warning` end-to-end run RabbitMQ used "
                f"{fmt(per.get('rabbitmq'), 3)} ms of CPU per delivered message — "
                f"{fmt(share, 0)}% of the pipeline's CPU (stub excluded): each message is "
                "published once (confirmed), delivered once and acked once."
            )
        report.add(text)


async def run(bench: Bench) -> BrokerResult:
    queue = f"bench-{bench.run_id.lower()}-broker"
    command = [
        sys.executable,
        "-m",
        "bench.broker",
        "--url",
        AMQP_URL,
        "--queue",
        queue,
        "--sequential",
        str(bench.args.broker_sequential),
        "--gathered",
        str(bench.args.broker_gathered),
        "--batch",
        bench.scheduler_env.get(
            "LEASE_BATCH_SIZE",
            str(SchedulerSettings.model_fields["lease_batch_size"].default),
        ),
    ]
    if bench.rabbit:
        command += ["--rabbit-pid", str(bench.rabbit)]
    b = await bench.subprocess_json(command)
    log(
        f"  broker: sequential {b['publish_sequential']['rate']}/s, gathered "
        f"{b['publish_gathered']['rate']}/s, consume+ack {b['consume_ack']['rate']}/s"
    )
    return BrokerResult.from_body(b)
