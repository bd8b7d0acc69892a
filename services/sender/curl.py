"""HTTP POSTs through libcurl's multi interface (pycurl), driven by the running event loop.

The sender sends with this: less CPU per request than aiohttp, and no threads of its own
(docs/benchmarks/20261202T060243Z-findings.md). curl says which sockets to watch
(`M_SOCKETFUNCTION`) and when to call back (`M_TIMERFUNCTION`); the loop's readers, writers and
one timer call `socket_action`, and each finished transfer resolves its future. The multi
handle pools connections (at most `max_connections`); each transfer is bounded by its own
`TIMEOUT_MS`. HTTP/1.1, no redirects, no proxy from the environment, no `Expect: 100-continue`.
A failure is a `TransferError` in the words of `FAILURES`, so the error tells whether the
request may have reached the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import pycurl

# libcurl's error codes, as the kind of failure the provider contract cares about.
_TIMED_OUT = pycurl.E_OPERATION_TIMEDOUT
NOT_WRITTEN = "NotWritten"
FAILURES: dict[int, str] = {
    # `post(start_by=)`: the request was not written, it was too late (PREREQFUNCTION).
    pycurl.E_ABORTED_BY_CALLBACK: NOT_WRITTEN,
    pycurl.E_COULDNT_RESOLVE_HOST: "CannotConnect",
    pycurl.E_COULDNT_CONNECT: "CannotConnect",
    pycurl.E_SEND_ERROR: "SendError",
    pycurl.E_RECV_ERROR: "RecvError",
    pycurl.E_GOT_NOTHING: "ServerDisconnected",
    pycurl.E_PARTIAL_FILE: "TruncatedBody",
    8: "BadResponse",  # CURLE_WEIRD_SERVER_REPLY
    pycurl.E_UNSUPPORTED_PROTOCOL: "BadResponse",
}
# Those after which the request may have been written and acted on by the server.
MAY_HAVE_ARRIVED = frozenset({"SendError", "RecvError", "ServerDisconnected", "TruncatedBody"})


class TransferError(Exception):
    """A transfer that got no complete HTTP answer."""

    def __init__(self, kind: str, errno: int, message: str) -> None:
        super().__init__(f"{kind}: {message} (curl {errno})")
        self.kind = kind
        self.errno = errno


class TransferTimeout(TransferError):
    pass


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes
    headers: list[bytes]  # raw header lines, status line first

    def header(self, name: bytes) -> str | None:
        """The first header of this (lower-case) name."""
        prefix = name + b":"
        for line in self.headers:
            if line[: len(prefix)].lower() == prefix:
                return line[len(prefix) :].strip().decode("latin-1")
        return None


def _always_ok(*_: object) -> int:
    return int(pycurl.PREREQFUNC_OK)


def _before(deadline: float) -> Any:
    def check(*_: object) -> int:
        late = time.monotonic() >= deadline
        return int(pycurl.PREREQFUNC_ABORT if late else pycurl.PREREQFUNC_OK)

    return check


@dataclass(slots=True)
class _Transfer:
    future: asyncio.Future[Answer]
    chunks: list[bytes]
    headers: list[bytes]


class CurlMulti:
    def __init__(self, *, max_connections: int, keepalive_s: float) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._multi: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle: list[Any] = []
        self._transfers: dict[Any, _Transfer] = {}
        self._watched: set[int] = set()
        self.closed = False

    def _start(self) -> Any:
        """The multi handle, made on the first request inside the running loop."""
        if self.closed:
            raise RuntimeError("CurlMulti is closed")
        self._loop = asyncio.get_running_loop()
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self._max_connections)
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self._max_connections)
        multi.setopt(pycurl.M_MAXCONNECTS, self._max_connections)
        self._multi = multi
        return multi

    def _new_handle(self) -> Any:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.PROXY, "")  # never a proxy from the environment
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.MAXAGE_CONN, max(1, round(self._keepalive_s)))
        return handle

    # --- the event loop's side ----------------------------------------------------------------

    def _on_socket(self, what: int, fd: int, _multi: Any, _data: Any) -> None:
        loop = self._loop
        assert loop is not None
        if fd in self._watched:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
            self._watched.discard(fd)
        if what == pycurl.POLL_REMOVE:
            return
        if what in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if what in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        self._watched.add(fd)

    def _on_timer(self, ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if ms >= 0 and self._loop is not None:
            self._timer = self._loop.call_later(ms / 1000, self._act, pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, events: int) -> None:
        multi = self._multi
        if multi is None:
            return
        while True:
            code, _running = multi.socket_action(fd, events)
            if code != pycurl.E_CALL_MULTI_PERFORM:
                break
        while True:
            queued, finished, failed = multi.info_read()
            for handle in finished:
                transfer = self._done(handle, reuse=True)
                if transfer is not None and not transfer.future.done():
                    transfer.future.set_result(
                        Answer(
                            handle.getinfo(pycurl.RESPONSE_CODE),
                            b"".join(transfer.chunks),
                            transfer.headers,
                        )
                    )
            for handle, errno, message in failed:
                # A failed transfer's connection is closed by curl; the handle is reusable.
                transfer = self._done(handle, reuse=True)
                if transfer is not None and not transfer.future.done():
                    error: TransferError
                    if errno == _TIMED_OUT:
                        error = TransferTimeout("timeout", errno, message)
                    else:
                        error = TransferError(FAILURES.get(errno, "CurlError"), errno, message)
                    transfer.future.set_exception(error)
            if not queued:
                break

    def _done(self, handle: Any, *, reuse: bool) -> _Transfer | None:
        transfer = self._transfers.pop(handle, None)
        self._multi.remove_handle(handle)
        if reuse:
            self._idle.append(handle)
        else:
            handle.close()
        return transfer

    # --- requests -------------------------------------------------------------------------------

    async def post(
        self,
        url: str,
        body: bytes,
        headers: list[str],
        *,
        timeout_s: float,
        start_by: float | None = None,
    ) -> Answer:
        """POST `body`; raises TransferTimeout after `timeout_s`, TransferError when no full
        answer came. With `start_by` (time.monotonic()), the request is not written once that
        moment has passed: curl asks just before it sends the request on its connection (new or
        reused), and the transfer fails with kind `NOT_WRITTEN`."""
        multi = self._multi if self._multi is not None else self._start()
        assert self._loop is not None
        handle = self._idle.pop() if self._idle else self._new_handle()
        chunks: list[bytes] = []
        header_lines: list[bytes] = []
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.POSTFIELDS, body)
        handle.setopt(pycurl.HTTPHEADER, headers)
        handle.setopt(pycurl.WRITEFUNCTION, chunks.append)
        handle.setopt(pycurl.HEADERFUNCTION, header_lines.append)
        handle.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout_s * 1000)))
        handle.setopt(pycurl.PREREQFUNCTION, _always_ok if start_by is None else _before(start_by))
        future: asyncio.Future[Answer] = self._loop.create_future()
        self._transfers[handle] = _Transfer(future, chunks, header_lines)
        multi.add_handle(handle)
        try:
            return await future
        except asyncio.CancelledError:
            if handle in self._transfers:  # still under way: abandon it and its connection
                self._done(handle, reuse=False)
            raise

    async def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            for fd in self._watched:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
        self._watched.clear()
        for handle, transfer in list(self._transfers.items()):
            self._done(handle, reuse=False)
            if not transfer.future.done():
                transfer.future.set_exception(TransferError("Closed", 0, "client closed"))
        for handle in self._idle:
            handle.close()
        self._idle.clear()
        if self._multi is not None:
            with contextlib.suppress(pycurl.error):
                self._multi.close()
            self._multi = None
