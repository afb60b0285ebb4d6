"""QUIC transport benchmarks, compared with the HTTP path in the same run.

The gateway is pinned to CPU 0; the upstream simulator and this load
generator (the Python QuicClient, also aioquic) to CPU 1.

- messages/s with frames of 1 message (one stream per message, 64 in
  flight; and pipelined on one stream) and MessageBatch frames of 100 and
  1000 messages, in sync mode (delivered upstream) and async mode
  (acknowledged once on disk);
- the same through HTTP (POST /messages, POST /messages/batch);
- P50/P99 latency of single messages sent one at a time, QUIC vs HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rig import gateway_rig

from aimesh import AIMessage, _native
from aimesh.quic import QuicClient

_counter = itertools.count()


def _msg() -> AIMessage:
    return AIMessage(agent_id="bench", payload=f"hello {next(_counter)}".encode())


async def _rate(
    seconds: float, inflight: int, per_call: int, call: Callable[[], Awaitable[int]]
) -> tuple[float, int]:
    """Keep ``inflight`` calls running for ``seconds``; answer (messages/s,
    messages not acknowledged as accepted)."""
    deadline = time.perf_counter() + seconds
    done = bad = 0

    async def worker() -> None:
        nonlocal done, bad
        while time.perf_counter() < deadline:
            bad += await call()
            done += per_call

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return done / (time.perf_counter() - t0), bad


def _not_ok(acks: list) -> int:  # type: ignore[type-arg]
    return sum(1 for a in acks if a.status.value not in ("success", "received"))


async def _quic_suite(h, port: int, cert: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    async with QuicClient("127.0.0.1", port, cafile=cert, connections=2) as c:
        for mode in (False, True):
            label = "async" if mode else "sync"

            async def single(mode: bool = mode) -> int:
                return _not_ok([await c.send(_msg(), async_mode=mode)])

            rate, bad = await _rate(seconds, 64, 1, single)
            h.record(f"QUIC {label}: 1 msg/stream, 64 streams", rate, "msgs/s", not_ok=bad)

            async def piped(mode: bool = mode) -> int:
                acks = [a async for a in c.stream([_msg() for _ in range(1000)], async_mode=mode)]
                return _not_ok(acks)

            rate, bad = await _rate(seconds, 2, 1000, piped)
            h.record(f"QUIC {label}: 1 msg/frame, pipelined x1000", rate, "msgs/s", not_ok=bad)

            for size in (100, 1000):

                async def batch(mode: bool = mode, size: int = size) -> int:
                    msgs = [_msg() for _ in range(size)]
                    return _not_ok(await c.send_batch(msgs, async_mode=mode))

                rate, bad = await _rate(seconds, 4, size, batch)
                h.record(f"QUIC {label}: batches of {size}", rate, "msgs/s", not_ok=bad)


async def _http_suite(h, url: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    # aiohttp, not httpx: httpx's pool is the bottleneck at 64 in flight.
    # Idle connections are dropped before the server's 5 s keep-alive ends,
    # so a request never races the server closing its connection.
    proto = {"content-type": "application/x-protobuf"}
    conn = aiohttp.TCPConnector(limit=64, keepalive_timeout=2.0)
    async with aiohttp.ClientSession(url, connector=conn) as http:
        for mode in ("sync", "async"):

            async def single(mode: str = mode) -> int:
                body = _msg().to_protobuf()
                async with http.post(f"/messages?mode={mode}", data=body, headers=proto) as r:
                    await r.read()
                    return 0 if r.status in (200, 202) else 1

            rate, bad = await _rate(seconds, 64, 1, single)
            h.record(f"HTTP {mode}: 1 msg/request, 64 in flight", rate, "msgs/s", not_ok=bad)
            for size in (100, 1000):

                async def batch(mode: str = mode, size: int = size) -> int:
                    body = _native.encode_batch([_msg().to_protobuf() for _ in range(size)])
                    path = f"/messages/batch?mode={mode}"
                    async with http.post(path, data=body, headers=proto) as r:
                        await r.read()
                        return 0 if r.status == 200 else size

                rate, bad = await _rate(seconds, 4, size, batch)
                h.record(f"HTTP {mode}: batches of {size}", rate, "msgs/s", not_ok=bad)


async def _latency(h, port: int, cert: str, url: str, n: int) -> None:  # type: ignore[no-untyped-def]
    quic = _native.LatencyHistogram()
    http_hist = _native.LatencyHistogram()
    proto = {"content-type": "application/x-protobuf"}

    async def post(http: aiohttp.ClientSession) -> None:
        async with http.post("/messages", data=_msg().to_protobuf(), headers=proto) as r:
            await r.read()

    async with (
        QuicClient("127.0.0.1", port, cafile=cert) as c,
        aiohttp.ClientSession(url) as http,
    ):
        for _ in range(50):  # warm both paths
            await c.send(_msg())
            await post(http)
        for _ in range(n):
            t0 = time.perf_counter()
            await c.send(_msg())
            quic.record((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            await post(http)
            http_hist.record((time.perf_counter() - t0) * 1000)
    for name, hist in (("QUIC", quic), ("HTTP", http_hist)):
        h.record(f"{name} single message, one at a time P50", hist.percentile(50), "ms")
        h.record(f"{name} single message, one at a time P99", hist.percentile(99), "ms")


def run(h) -> None:  # type: ignore[no-untyped-def]
    seconds = 1.5 if h.quick else 5.0
    with gateway_rig(queue_capacity=1_000_000) as (_sim, gw):
        cert = str(gw.certificate)
        asyncio.run(_quic_suite(h, gw.quic_port, cert, seconds))
        asyncio.run(_http_suite(h, gw.url, seconds))
        asyncio.run(_latency(h, gw.quic_port, cert, gw.url, 200 if h.quick else 1000))
