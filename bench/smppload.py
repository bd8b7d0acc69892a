"""SMPP sends from one process to an SMSC (the simulator), with a chosen client: the ceiling
for the sender's SMPP phase and what our client costs above the bare library.

    python -m bench.smppload --client (aiosmpplib | client) --port 2775 --window 32 \
        --count 20000 [--system-id mailing --password secret] [--receipts]

Prints one JSON line: submits, accepted, seconds, rate, cpu_s, cpu_ms_per_message, receipts.

- aiosmpplib  the bare library: one ESME, its own broker, the client's correlator (the default
              one slows down as it grows), a hook that counts responses and receipts,
              `--window` submit_sm awaiting a response at most (a semaphore released by the
              hook), every message a single GSM-7 part: the ceiling
- client      services.sender.smpp.SmppClient (one bind, the same window): our outcome
              classes, text splitting, window and receipt handling on top
With `--receipts` the run ends when every receipt came back (the simulator sends them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

from aiosmpplib import (
    ESME,
    NPI,
    TON,
    AbstractHook,
    DeliverSm,
    PhoneNumber,
    SmppMessage,
    SubmitSm,
    SubmitSmResp,
)
from pydantic import SecretStr

from services.sender.smpp import Delivery, SmppClient, SubmitOutcome, _Correlator
from shared.providers import SmppProvider


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _CountingHook(AbstractHook):
    def __init__(self, window: asyncio.Semaphore) -> None:
        self.window = window
        self.accepted = 0
        self.answered = 0
        self.receipts = 0
        self.changed = asyncio.Event()

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        return None

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSmResp):
            self.answered += 1
            self.accepted += smpp_message.command_status == 0
            self.window.release()
            self.changed.set()
        elif isinstance(smpp_message, DeliverSm) and smpp_message.is_receipt():
            self.receipts += 1
            self.changed.set()

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        self.window.release()


async def _bare(args: argparse.Namespace) -> dict[str, Any]:
    window = asyncio.Semaphore(args.window)
    hook = _CountingHook(window)
    esme = ESME(
        "127.0.0.1",
        args.port,
        args.system_id,
        args.password,
        hook=hook,
        log_level="ERROR",
        enquire_link_interval=30.0,
        # aiosmpplib's default correlator keeps every sent message for three days and slows
        # down as it grows (1.4 ms of CPU per message at 5,000): the ceiling uses the client's.
        correlator=_Correlator("bench"),
    )
    task = asyncio.create_task(esme.start())
    while not esme._bound.is_set():
        await asyncio.sleep(0.01)
    source = PhoneNumber("MAILING", TON.ALPHANUMERIC, NPI.UNKNOWN)
    cpu, started = _cpu(), time.monotonic()
    for number in range(args.count):
        await window.acquire()
        await esme.broker.enqueue(
            SubmitSm(
                short_message=f"Bench message {number}",
                source=source,
                destination=PhoneNumber(f"7900{number:07d}", TON.INTERNATIONAL, NPI.ISDN),
                registered_delivery=1 if args.receipts else 0,
                log_id=str(number),
            )
        )
    while hook.answered < args.count or (args.receipts and hook.receipts < hook.accepted):
        hook.changed.clear()
        await hook.changed.wait()
    seconds, cpu_s = time.monotonic() - started, _cpu() - cpu
    await esme.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "accepted": hook.accepted,
        "receipts": hook.receipts,
        "seconds": seconds,
        "cpu_s": cpu_s,
    }


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    receipts = 0
    changed = asyncio.Event()

    async def on_deliver(delivery: Delivery) -> None:
        nonlocal receipts
        receipts += 1
        changed.set()

    provider = SmppProvider(
        name="bench",
        host="127.0.0.1",
        port=args.port,
        system_id=args.system_id,
        password=SecretStr(args.password),
        source_addr="MAILING",
        window=args.window,
    )
    client = SmppClient(provider, on_deliver)
    client.start()
    await client.wait_bound()
    workers = asyncio.Semaphore(args.window * 2)  # keeps the window full, as the sender would
    accepted = 0

    async def one(number: int) -> None:
        nonlocal accepted
        async with workers:
            result = await client.submit(f"7900{number:07d}", f"Bench message {number}")
            accepted += result.outcome == SubmitOutcome.ACCEPTED

    cpu, started = _cpu(), time.monotonic()
    await asyncio.gather(*(one(n) for n in range(args.count)))
    while args.receipts and receipts < accepted:
        changed.clear()
        await changed.wait()
    seconds, cpu_s = time.monotonic() - started, _cpu() - cpu
    await client.close()
    return {"accepted": accepted, "receipts": receipts, "seconds": seconds, "cpu_s": cpu_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["aiosmpplib", "client"], required=True)
    parser.add_argument("--port", type=int, default=2775)
    parser.add_argument("--system-id", default="mailing")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--receipts", action="store_true")
    args = parser.parse_args()
    run = _bare if args.client == "aiosmpplib" else _client
    result = asyncio.run(run(args))
    result |= {
        "client": args.client,
        "submits": args.count,
        "rate": round(args.count / result["seconds"], 1),
        "cpu_ms_per_message": round(result["cpu_s"] / args.count * 1000, 4),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
