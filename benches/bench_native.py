"""Native core benchmarks: router, batch path, limiters, queue, frames,
hashing, histograms (single-threaded, from Python)."""

from __future__ import annotations

import os
import struct
import time

from aimesh import AIMessage, _native


def _frames(messages: list[AIMessage], repeat: int) -> bytes:
    one = b"".join(struct.pack(">I", len(b)) + b for b in (m.to_protobuf() for m in messages))
    return one * repeat


def _router() -> _native.Router:
    r = _native.Router()
    for i in range(8):
        r.upsert_endpoint(
            f"ep{i}",
            group="gpt-4o" if i < 4 else "gpt-4o-mini",
            capacity=10_000_000,
            cost_per_1k_tokens=1.0 + i,
            latency_p99_ms=100.0 + 37 * i,
        )
    return r


def run(h) -> None:  # type: ignore[no-untyped-def]
    quick = h.quick
    r = _router()
    h.measure("route() across 8 endpoints", lambda: r.route())
    h.measure("route(group) within 4 endpoints", lambda: r.route("gpt-4o"))
    h.measure(
        "record_start + record_finish",
        lambda: (r.record_start("ep0"), r.record_finish("ep0", 12.5, True)),
    )

    n = 100_000 if quick else 1_000_000
    variants = [
        AIMessage(f"agent-{i}", b"x" * 64, metadata={"model": "gpt-4o" if i % 2 else "gpt-4o-mini"})
        for i in range(16)
    ]
    data = _frames(variants, n // 16)
    best = float("inf")
    for _ in range(3):
        rb = _router()
        t0 = time.perf_counter()
        res = rb.route_batch(data)
        best = min(best, time.perf_counter() - t0)
    assert res.routed == n, res.rejections
    h.record(
        f"route_batch, {n:,} messages (decode+validate+route)",
        n / best,
        "msgs/s",
        seconds=best,
        bytes=len(data),
    )

    tb = _native.TokenBucket(1e12, 1e12)
    h.measure("TokenBucket.try_acquire (1 key)", lambda: tb.try_acquire("agent"))
    keys = [f"agent-{i}" for i in range(10_000)]
    it = iter(range(1 << 62))
    h.measure("TokenBucket.try_acquire (10k keys)", lambda: tb.try_acquire(keys[next(it) % 10_000]))
    sw = _native.SlidingWindow(1_000_000_000, 1.0)
    h.measure("SlidingWindow.try_acquire (1 key)", lambda: sw.try_acquire("agent"))

    q = _native.PriorityQueue(1_000_000)
    item = object()
    h.measure("PriorityQueue push + pop", lambda: (q.push(item, 50, None), q.pop()))
    batch = list(range(1000))

    def push_pop_many() -> None:
        for i in batch:
            q.push(i, i % 101)
        q.pop_many(1000)

    h.measure("PriorityQueue 1000 push + pop_many(1000)", push_pop_many, ops_per_call=1000)

    for size, count in ((64, 100_000), (1024, 100_000)):
        count = count // 10 if quick else count
        buf = _frames([AIMessage("agent", os.urandom(size), metadata={"model": "m"})], count)
        h.measure(
            f"MessageBuffer decode, {count:,} x {size} B payloads",
            lambda buf=buf: _native.MessageBuffer(buf),
            ops_per_call=count,
            bytes_per_call=len(buf),
        )

    big = os.urandom(64 * 1024)
    h.measure(
        "dedup_key, 64 KiB payload", lambda: _native.dedup_key("a", big), bytes_per_call=len(big)
    )
    small = os.urandom(1024)
    h.measure(
        "dedup_key, 1 KiB payload", lambda: _native.dedup_key("a", small), bytes_per_call=len(small)
    )
    table = _native.DedupTable(3600, max_entries=1_000_000)
    counter = iter(range(1 << 62))
    h.measure(
        "DedupTable.insert_if_absent (new keys)",
        lambda: table.insert_if_absent(next(counter).to_bytes(8, "little"), None),
    )

    hist = _native.LatencyHistogram()
    h.measure("LatencyHistogram.record", lambda: hist.record(12.5))
    values = [float(i % 1000) for i in range(10_000)]
    h.measure(
        "LatencyHistogram.record_many(10k)",
        lambda: hist.record_many(values),
        ops_per_call=len(values),
    )
