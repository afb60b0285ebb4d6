"""A small HTTP/1.1 load generator on raw asyncio streams (keep-alive), light
enough that it does not become the bottleneck of what it measures.

- ``closed_loop``: N connections each sending back-to-back -> max RPS.
- ``open_loop``: requests scheduled at a fixed rate; latency is measured from
  the scheduled send time (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aimesh import _native


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    hist: _native.LatencyHistogram = field(default_factory=_native.LatencyHistogram)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status


def build_request(url: str, body: bytes, path: str = "/messages") -> bytes:
    parts = urlsplit(url)
    host = parts.netloc
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connect(url: str) -> _Conn:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    return _Conn(reader, writer)


async def closed_loop(
    url: str,
    make_body: callable,
    path: str,
    connections: int,
    seconds: float,  # type: ignore[valid-type]
) -> LoadResult:
    res = LoadResult()
    stop_at = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker() -> None:
        conn = await _connect(url)
        while time.perf_counter() < stop_at:
            raw = build_request(url, make_body(next(counter)), path)
            t0 = time.perf_counter()
            status = await conn.request(raw)
            res.hist.record((time.perf_counter() - t0) * 1000)
            res.sent += 1
            res.statuses[status] = res.statuses.get(status, 0) + 1
            if status < 300:
                res.ok += 1
            else:
                res.errors += 1
        conn.writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    res.seconds = time.perf_counter() - t0
    return res


async def open_loop(
    url: str,
    make_body: callable,
    path: str,
    rate: float,
    seconds: float,
    connections: int = 64,  # type: ignore[valid-type]
) -> LoadResult:
    """Send ``rate`` requests/s for ``seconds`` over a pool of connections."""
    res = LoadResult()
    pool: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await _connect(url))
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []

    async def one(i: int) -> None:
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await pool.get()
        try:
            status = await conn.request(build_request(url, make_body(i), path))
        finally:
            pool.put_nowait(conn)
        res.hist.record((time.perf_counter() - scheduled) * 1000)
        res.sent += 1
        res.statuses[status] = res.statuses.get(status, 0) + 1
        if status < 300:
            res.ok += 1
        else:
            res.errors += 1

    for i in range(total):
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    res.seconds = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().writer.close()
    return res
