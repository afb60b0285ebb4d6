"""A bare QUIC peer for protocol tests: raw bytes on raw streams, the way
a client in another language would speak to the gateway (no AiMesh client
code involved)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from aimesh.quic.protocol import ALPN


@dataclass
class StreamResult:
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset_code: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RawProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: dict[int, StreamResult] = {}
        self.closed_code: int | None = None

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            r = self.results.setdefault(event.stream_id, StreamResult())
            r.data += event.data
            if event.end_stream:
                r.ended = True
                r.done.set()
        elif isinstance(event, events.StreamReset):
            r = self.results.setdefault(event.stream_id, StreamResult())
            r.reset_code = event.error_code
            r.done.set()
        elif isinstance(event, events.ConnectionTerminated):
            self.closed_code = event.error_code
            for r in self.results.values():
                r.done.set()

    def open(self) -> int:
        sid = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(sid, b"")  # reserve the id now
        self.results[sid] = StreamResult()
        return sid

    def write(self, sid: int, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(sid, data, end_stream=end)
        self.transmit()

    async def result(self, sid: int, timeout: float = 20.0) -> StreamResult:
        r = self.results[sid]
        await asyncio.wait_for(r.done.wait(), timeout)
        return r

    async def wait_bytes(self, sid: int, n: int, timeout: float = 20.0) -> bytes:
        """Wait until at least ``n`` bytes arrived on the stream."""
        r = self.results[sid]
        deadline = asyncio.get_running_loop().time() + timeout
        while len(r.data) < n:
            if r.done.is_set() or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        return bytes(r.data)


@contextlib.asynccontextmanager
async def raw_connection(port: int, cafile: str | None = None) -> AsyncIterator[RawProtocol]:
    cfg = QuicConfiguration(alpn_protocols=[ALPN], is_client=True, server_name="localhost")
    if cafile:
        cfg.load_verify_locations(cafile)
    else:
        cfg.verify_mode = ssl.CERT_NONE
    async with connect("127.0.0.1", port, configuration=cfg, create_protocol=RawProtocol) as p:
        assert isinstance(p, RawProtocol)
        yield p
