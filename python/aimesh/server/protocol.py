"""uvicorn's HTTP/1.1 protocol (httptools) with the guards uvicorn lacks:

- a deadline on every request head: a client that connects and sends
  nothing, or dribbles its request line and headers (slowloris), is cut off
  ``header_timeout`` seconds after it connected or after the first byte
  following its last request: 408 once a request has begun, a plain close
  otherwise (the idle time between requests is uvicorn's keep-alive
  timeout);
- a cap on the size of a request head (request line and headers): past
  ``max_head_bytes`` the answer is 431 and the connection is closed. httptools
  itself has none, and uvicorn's ``h11_max_incomplete_event_size`` applies to
  the h11 protocol only, so a single endless header would grow without bound;
- a deadline on every request body: ``body_timeout`` seconds after its head,
  the whole body must be in (a slow body is answered 408 and cut; body
  *sizes* are limited in the app);
- a cap on concurrent connections from one peer address: past
  ``max_connections_per_ip`` a new connection is answered 503 and closed.

Each costs one timer handle or one counter per connection; the answer is
never cut (a long answer such as an SSE stream must not end on a deadline).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: Default cap on a request head (line and headers), as h11's default.
MAX_HEAD_BYTES = 64 * 1024


def _error(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"x-content-type-options: nosniff\r\n"
        b"cache-control: no-store\r\n"
        b"connection: close\r\n\r\n"
    )
    return STATUS_LINE[status] + head + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """See the module docstring. Configure through :func:`guarded_protocol`."""

    header_timeout: ClassVar[float] = 10.0
    max_head_bytes: ClassVar[int] = MAX_HEAD_BYTES
    body_timeout: ClassVar[float] = 30.0
    max_connections_per_ip: ClassVar[int] = 0  # 0 = no cap
    #: Open connections per peer address (of this protocol class).
    connections_by_ip: ClassVar[dict[str, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        # True from the end of one request (or the connection's start) until
        # the next request's headers are complete.
        self._reading_head = True
        self._head_begun = False
        self._head_bytes = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._peer_ip: str | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections_per_ip:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            counts = self.connections_by_ip
            if counts.get(ip, 0) >= self.max_connections_per_ip:
                transport.write(_error(503, "too_many_connections", "too many connections"))
                transport.close()
                return
            counts[ip] = counts.get(ip, 0) + 1
            self._peer_ip = ip
        # Also bounds a connection that never sends a byte.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self._peer_ip is not None:
            counts = self.connections_by_ip
            counts[self._peer_ip] -= 1
            if counts[self._peer_ip] <= 0:
                del counts[self._peer_ip]
            self._peer_ip = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            # Counted before parsing: httptools buffers a header internally
            # until it is complete, so its callbacks come too late to bound
            # memory. A chunk that also ends the head is not held against it.
            self._head_bytes += len(data)
            if self._head_timer is None:
                # Timed from the first byte after the last request: uvicorn
                # drops its keep-alive timer on any byte, even a bare CRLF
                # that starts no request, which would then hold the
                # connection forever.
                self._arm_head_timer()
        super().data_received(data)
        if (
            self._reading_head
            and self._head_bytes > self.max_head_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(431, "headers_too_large", "request head too large")

    # -- httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._reading_head = False
        self._head_begun = False
        self._head_bytes = 0
        super().on_headers_complete()
        # Cancelled at once by on_message_complete when there is no body.
        self._body_timer = self.loop.call_later(self.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()
        self._reading_head = True

    # -- the guards --------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self._head_begun:
            self._refuse(408, "header_timeout", "request head not received in time")
        elif not self._answering():
            self.transport.close()  # no request begun: nothing to answer

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            # Answered without the whole body (a 413, say): stop waiting
            # for the rest once the answer is out.
            if self.cycle.response_complete:
                self.transport.close()
            else:
                self.cycle.keep_alive = False
            return
        self.transport.write(_error(408, "body_timeout", "request body not received in time"))
        self.transport.close()

    def _answering(self) -> bool:
        """True while an answer is still being written. Then the connection
        is not cut: it is told to close once that answer is complete (a
        long event stream is never cut by a head deadline)."""
        if self.cycle is None or self.cycle.response_complete:
            return False
        self.cycle.keep_alive = False
        self.flow.pause_reading()
        return True

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._cancel_head_timer()
        if not self._answering():
            self.transport.write(_error(status, code, message))
            self.transport.close()


def guarded_protocol(
    header_timeout: float,
    max_head_bytes: int = MAX_HEAD_BYTES,
    *,
    body_timeout: float = 30.0,
    max_connections_per_ip: int = 0,
) -> type[GuardedHttpProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) with these
    limits (uvicorn builds protocols from a class, so the limits are class
    attributes of a subclass, which also owns its connection counts)."""
    if header_timeout <= 0 or max_head_bytes <= 0 or body_timeout <= 0:
        raise ValueError("header_timeout, body_timeout and max_head_bytes must be > 0")
    if max_connections_per_ip < 0:
        raise ValueError("max_connections_per_ip must be >= 0")
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout": float(header_timeout),
            "max_head_bytes": int(max_head_bytes),
            "body_timeout": float(body_timeout),
            "max_connections_per_ip": int(max_connections_per_ip),
            "connections_by_ip": {},
        },
    )
