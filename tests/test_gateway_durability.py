"""Crash safety and graceful shutdown with real processes: SIGKILL and
SIGTERM of ``aimesh serve``."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import httpx

from tests.conftest import openai_endpoint


async def _submit_async(url: str, n: int) -> list[str]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:

        async def one(i: int) -> str:
            r = await c.post(
                "/messages?mode=async",
                json={"agent_id": "durable", "payload_text": f"job {i}", "priority": i % 101},
            )
            assert r.status_code == 202, r.text
            return str(r.json()["original_message_id"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_async_messages_survive_sigkill(sims, gateways):
    # A slow upstream with little capacity, so most messages are still
    # queued (RECEIVED) when the gateway is killed.
    sim = sims("--latency-ms", "100", "--jitter-ms", "0", "--completion-tokens", "3")
    gw = gateways(
        [openai_endpoint(sim, "sim", capacity=4)],
        limits={"rate_limit_rps": 100000, "rate_limit_burst": 100000},
    )
    ids = asyncio.run(_submit_async(gw.url, 300))
    assert len(set(ids)) == 300
    gw.kill()  # SIGKILL: no drain, no cleanup
    delivered_before = sim.stats()["requests"]
    assert delivered_before < 300  # the crash really interrupted the work

    gw.start()  # same data dir
    deadline = time.monotonic() + 90
    pending = set(ids)
    with gw.client() as c:
        while pending and time.monotonic() < deadline:
            for mid in list(pending):
                state = c.get(f"/messages/{mid}").json()
                if state["status"] != "received":
                    assert state["status"] == "success", state
                    pending.discard(mid)
            time.sleep(0.2)
    assert not pending, f"{len(pending)} messages lost"
    # Each message reached the upstream at least once; only deliveries that
    # were in flight at the kill (at most capacity=4) may have been repeated.
    stats = sim.stats()
    assert 300 <= stats["requests"] <= 300 + 4


def test_sigterm_drains_in_flight_requests(sims, gateways):
    sim = sims("--latency-ms", "700", "--jitter-ms", "0")
    gw = gateways([openai_endpoint(sim, "sim")])
    results: list[httpx.Response] = []

    def call(i: int) -> None:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            results.append(c.post("/messages", json={"agent_id": "t", "payload_text": f"m{i}"}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # requests are in flight upstream
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    assert gw.proc.wait(timeout=30) == 0
    assert [r.status_code for r in results] == [200] * 5
    assert all(r.json()["status"] == "success" for r in results)
