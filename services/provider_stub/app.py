"""Local stand-in for the external sending API, with faults switchable at runtime.

``POST /send/{msgId}`` implements the provider's contract; ``/_control/*`` (no auth)
changes faults and reads what was received. See DESIGN.md, "External sending API".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
from array import array
from bisect import bisect_right
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from aiohttp import web

from shared.loop_lag import LoopLag

JSON = "application/json"
DEFAULT_TOKEN = "stub-token"  # noqa: S105 - a well-known test token, not a secret
PHONE_MIN, PHONE_MAX = 70_000_000_000, 79_999_999_999
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_PAGE = 100_000
OUTCOMES = ("ok", "unauthorized", "bad_request", "error", "garbage", "hang", "down", "override")

_MSG_ID_RE = re.compile(r"-?[0-9]{1,19}")
_OK_BODY = b'{"code": 0, "message": "OK"}'
# 200 answers a strict client must not take for success.
_GARBAGE_BODIES = (
    b'{"code": 1, "message": "OK"}',
    b'{"code": 0}',
    b'{"code": "0", "message": "OK"}',
    b'{"message": "OK"}',
    b"[]",
    b"not json",
    b"",
)


@dataclass(frozen=True, slots=True)
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    garbage_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3600.0
    down: bool = False
    status_override: int | None = None
    retry_after: float | None = None

    def merged(self, patch: Any) -> Faults:
        """Return a copy with ``patch`` applied; ValueError if it is not valid."""
        if not isinstance(patch, dict):
            raise ValueError("faults must be a JSON object")
        unknown = sorted(set(patch) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(unknown)}")
        for key, value in patch.items():
            _check_fault(key, value)
        new = replace(self, **patch)
        if new.error_rate + new.garbage_rate + new.hang_rate > 1:
            raise ValueError("error_rate + garbage_rate + hang_rate must not exceed 1")
        return new


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_fault(key: str, value: Any) -> None:
    if key == "down":
        ok = isinstance(value, bool)
    elif key in ("error_status", "status_override"):
        nullable = key == "status_override"
        ok = (value is None and nullable) or (
            isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599
        )
    elif key.endswith("_rate"):
        ok = _is_number(value) and 0 <= value <= 1
    elif key == "retry_after" and value is None:
        ok = True
    else:
        ok = _is_number(value) and 0 <= value < float("inf")
    if not ok:
        raise ValueError(f"invalid value for {key}: {value!r}")


@dataclass(slots=True)
class StubConfig:
    token: str = DEFAULT_TOKEN
    seed: int | None = None
    faults: Faults = field(default_factory=Faults)

    @classmethod
    def from_env(cls) -> StubConfig:
        """Read ``STUB_TOKEN``, ``STUB_SEED`` and ``STUB_FAULTS`` (a JSON object)."""
        seed = os.environ.get("STUB_SEED")
        faults = Faults().merged(json.loads(os.environ.get("STUB_FAULTS") or "{}"))
        return cls(
            token=os.environ.get("STUB_TOKEN", DEFAULT_TOKEN),
            seed=int(seed) if seed else None,
            faults=faults,
        )


class Deliveries:
    """Successful deliveries, compact enough for millions of messages.

    First deliveries go to parallel append-only arrays (texts are interned, since a
    mailing sends one text to many phones); repeats of an id only bump a small dict.
    A page keeps the phone and text of the first delivery.
    """

    def __init__(self) -> None:
        self.ids = array("q")
        self.phones = array("q")
        self.first_at = array("d")
        self.texts: list[str] = []
        self.seen: set[int] = set()
        self.repeats: dict[int, list[float]] = {}  # id -> [extra deliveries, last_at]
        self.duplicates = 0
        self.first_received_at: float | None = None
        self.last_received_at: float | None = None
        self._interned: dict[str, str] = {}
        self._order = array("I")  # indexes sorted by id, rebuilt lazily for paging

    def add(self, msg_id: int, phone: int, text: str, at: float) -> None:
        if self.first_received_at is None:
            self.first_received_at = at
        self.last_received_at = at
        if msg_id in self.seen:
            self.duplicates += 1
            repeat = self.repeats.setdefault(msg_id, [0, at])
            repeat[0] += 1
            repeat[1] = at
            return
        self.seen.add(msg_id)
        self.ids.append(msg_id)
        self.phones.append(phone)
        self.first_at.append(at)
        self.texts.append(self._interned.setdefault(text, text))

    def first_since(self, moment: float) -> float | None:
        """The first acceptance (a first delivery or a repeat) after `moment`."""
        first = self.first_at
        i = bisect_right(first, moment)
        candidates = [first[i]] if i < len(first) else []
        candidates += [last for _, last in self.repeats.values() if last > moment]
        return min(candidates) if candidates else None

    def page(self, after_id: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        if len(self._order) != len(self.ids):
            self._order = array("I", sorted(range(len(self.ids)), key=self.ids.__getitem__))
        order, ids = self._order, self.ids
        start = 0 if after_id is None else bisect_right(order, after_id, key=ids.__getitem__)
        items: list[dict[str, Any]] = []
        for i in order[start : start + limit]:
            msg_id = ids[i]
            extra, last_at = self.repeats.get(msg_id, (0, self.first_at[i]))
            items.append(
                {
                    "id": msg_id,
                    "phone": self.phones[i],
                    "text": self.texts[i],
                    "count": 1 + int(extra),
                    "first_at": self.first_at[i],
                    "last_at": last_at,
                }
            )
        more = start + limit < len(order)
        return items, (ids[order[start + limit - 1]] if more else None)


class StubState:
    def __init__(self, config: StubConfig) -> None:
        self.config = config
        self.auth_header = f"Bearer {config.token}"
        self.closing = asyncio.Event()  # set on shutdown to release hung requests
        # How late the stub's own loop runs: it stamps each delivery when the loop gets to
        # the request, so its stamps are this exact (a starved stub stamps late).
        self.loop_lag = LoopLag(interval_s=0.02)
        self.reset()

    def reset(self) -> None:
        self.faults = Faults()
        self.rng = random.Random(self.config.seed)
        self.requests_total = 0
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)
        self.deliveries = Deliveries()

    def stats(self) -> dict[str, Any]:
        d = self.deliveries
        return {
            "requests_total": self.requests_total,
            "by_outcome": dict(self.by_outcome),
            "delivered_unique": len(d.seen),
            "duplicates": d.duplicates,
            "first_received_at": d.first_received_at,
            "last_received_at": d.last_received_at,
            "loop_lag_max_s": round(self.loop_lag.max_s, 4),
        }


STATE_KEY = web.AppKey("provider_stub_state", StubState)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload), content_type=JSON, headers=headers)


def _fail(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json(status, {"code": status, "message": message}, headers)


def _retry_headers(faults: Faults, status: int) -> dict[str, str] | None:
    if faults.retry_after is None or status not in (429, 503):
        return None
    seconds = faults.retry_after
    return {"Retry-After": str(int(seconds)) if float(seconds).is_integer() else str(seconds)}


def _parse_send(raw_id: str, raw_body: bytes) -> tuple[int, int, str] | str:
    """Return ``(msg_id, phone, text)`` or the reason the request is invalid."""
    if not _MSG_ID_RE.fullmatch(raw_id) or not INT64_MIN <= int(raw_id) <= INT64_MAX:
        return "msgId must be an int64"
    try:
        body = json.loads(raw_body)
    except ValueError:
        return "body must be JSON"
    if not isinstance(body, dict):
        return "body must be a JSON object"
    msg_id, phone, text = body.get("id"), body.get("phone"), body.get("text")
    if type(msg_id) is not int or msg_id != int(raw_id):
        return "id must be an integer equal to msgId"
    if type(phone) is not int or not PHONE_MIN <= phone <= PHONE_MAX:
        return "phone must be an integer of the form 7XXXXXXXXXX"
    if not isinstance(text, str) or not text:
        return "text must be a non-empty string"
    return msg_id, phone, text


async def send(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    faults = state.faults
    counts = state.by_outcome
    state.requests_total += 1

    if faults.down:
        counts["down"] += 1
        return web.Response(status=503, headers=_retry_headers(faults, 503))
    if faults.latency_ms or faults.jitter_ms:
        await asyncio.sleep((faults.latency_ms + state.rng.uniform(0, faults.jitter_ms)) / 1000)
    if faults.status_override is not None:
        counts["override"] += 1
        status = faults.status_override
        return _fail(status, "status override", _retry_headers(faults, status))
    if request.headers.get("Authorization") != state.auth_header:
        counts["unauthorized"] += 1
        return _fail(401, "missing or invalid bearer token")

    parsed = _parse_send(request.match_info["msg_id"], await request.read())
    if isinstance(parsed, str):
        counts["bad_request"] += 1
        return _fail(400, parsed)

    if faults.error_rate or faults.garbage_rate or faults.hang_rate:
        roll = state.rng.random()
        if roll < faults.error_rate:
            counts["error"] += 1
            status = faults.error_status
            return _fail(status, "injected error", _retry_headers(faults, status))
        roll -= faults.error_rate
        if roll < faults.garbage_rate:
            counts["garbage"] += 1
            return web.Response(body=state.rng.choice(_GARBAGE_BODIES), content_type=JSON)
        roll -= faults.garbage_rate
        if roll < faults.hang_rate:
            counts["hang"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.closing.wait(), faults.hang_seconds)
            # Nothing is recorded: whoever waited this long sees a failure, not a delivery.
            return _fail(504, "hung")

    counts["ok"] += 1
    state.deliveries.add(*parsed, time.time())
    return web.Response(body=_OK_BODY, content_type=JSON)


async def get_faults(request: web.Request) -> web.Response:
    return _json(200, asdict(request.app[STATE_KEY].faults))


async def put_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        state.faults = state.faults.merged(json.loads(await request.read()))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        return _fail(400, str(exc))
    return _json(200, asdict(state.faults))


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.reset()
    return _json(200, asdict(state.faults))


async def stats(request: web.Request) -> web.Response:
    """The counters; with `?since=<unix time>` also the first acceptance after that moment
    (`first_received_since`, null if none yet): how soon deliveries resumed after a fault."""
    state = request.app[STATE_KEY]
    body = state.stats()
    if "since" in request.query:
        try:
            since = float(request.query["since"])
        except ValueError:
            return _fail(400, "since must be a number (Unix time)")
        body["first_received_since"] = state.deliveries.first_since(since)
    return _json(200, body)


async def put_token(request: web.Request) -> web.Response:
    """Accept only this bearer token from now on (the provider rotated our credential)."""
    try:
        token = json.loads(await request.read()).get("token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        return _fail(400, 'body must be {"token": "<non-empty string>"}')
    request.app[STATE_KEY].auth_header = f"Bearer {token}"
    return _json(200, {"code": 0, "message": "OK"})


async def deliveries(request: web.Request) -> web.Response:
    query = request.query
    try:
        after_id = int(query["after_id"]) if "after_id" in query else None
        limit = int(query.get("limit", "10000"))
    except ValueError:
        return _fail(400, "after_id and limit must be integers")
    if not 1 <= limit <= MAX_PAGE:
        return _fail(400, f"limit must be between 1 and {MAX_PAGE}")
    items, next_after_id = request.app[STATE_KEY].deliveries.page(after_id, limit)
    return _json(200, {"items": items, "next_after_id": next_after_id})


async def healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


def create_app(config: StubConfig | None = None) -> web.Application:
    config = config or StubConfig()
    app = web.Application()
    state = StubState(config)
    state.faults = config.faults
    app[STATE_KEY] = state

    async def release_hung(app: web.Application) -> None:
        state.closing.set()

    async def watch_loop(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(state.loop_lag.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.on_shutdown.append(release_hung)
    app.cleanup_ctx.append(watch_loop)
    app.router.add_post("/send/{msg_id}", send)
    app.router.add_get("/_control/faults", get_faults)
    app.router.add_put("/_control/faults", put_faults)
    app.router.add_post("/_control/reset", reset)
    app.router.add_get("/_control/stats", stats)
    app.router.add_put("/_control/token", put_token)
    app.router.add_get("/_control/deliveries", deliveries)
    app.router.add_get("/healthz", healthz)
    return app


@dataclass(slots=True)
class RunningStub:
    url: str
    state: StubState
    runner: web.AppRunner

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_stub(
    host: str = "127.0.0.1", port: int = 0, config: StubConfig | None = None
) -> RunningStub:
    """Serve the stub in the running event loop; ``port=0`` picks a free port."""
    app = create_app(config)
    # Cancelling handlers of clients that went away keeps hung requests from piling up.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    return RunningStub(f"http://{bound_host}:{bound_port}", app[STATE_KEY], runner)
