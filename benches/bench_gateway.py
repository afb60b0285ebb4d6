"""Gateway benchmarks with real processes on loopback.

The gateway is pinned to CPU 0; the upstream simulator and this load
generator to CPU 1 (on a 2-core machine), so "one core" means one core.

- added latency: P50/P99 through AiMesh minus direct to the simulator, both
  at the same fixed request rate (open loop);
- max RPS of POST /messages (sync, full pipeline and delivery);
- async-mode intake throughput (202 after the message is on disk).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import closed_loop, open_loop
from rig import gateway_rig


def _chat_body(i: int) -> bytes:
    return orjson.dumps({"model": "sim", "messages": [{"role": "user", "content": f"hello {i}"}]})


def _message_body(i: int) -> bytes:
    return orjson.dumps({"agent_id": "bench", "payload_text": f"hello {i}"})


def run(h) -> None:  # type: ignore[no-untyped-def]
    seconds = 2.0 if h.quick else 8.0
    rate = 1000.0
    with gateway_rig(queue_capacity=100_000) as (sim, gw):
        direct = asyncio.run(open_loop(sim.url, _chat_body, "/v1/chat/completions", rate, seconds))
        through = asyncio.run(open_loop(gw.url, _message_body, "/messages", rate, seconds))
        for name, res in (("direct to simulator", direct), ("through AiMesh", through)):
            h.record(f"{name} @1k rps P50", res.hist.p50, "ms", errors=res.errors)
            h.record(f"{name} @1k rps P99", res.hist.p99, "ms", errors=res.errors)
        h.record("added latency P50 @1k rps", through.hist.p50 - direct.hist.p50, "ms")
        h.record("added latency P99 @1k rps", through.hist.p99 - direct.hist.p99, "ms")
        offset = 10_000_000
        sync = asyncio.run(
            closed_loop(gw.url, lambda i: _message_body(offset + i), "/messages", 64, seconds)
        )
        h.record(
            "POST /messages max rps (sync, delivered)",
            sync.rps,
            "req/s",
            errors=sync.errors,
            p99_ms=sync.hist.p99,
        )
        offset = 20_000_000
        asy = asyncio.run(
            closed_loop(
                gw.url, lambda i: _message_body(offset + i), "/messages?mode=async", 64, seconds
            )
        )
        h.record(
            "POST /messages?mode=async intake rps (on disk)",
            asy.rps,
            "req/s",
            errors=asy.errors,
            p99_ms=asy.hist.p99,
        )
