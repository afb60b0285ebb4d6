"""Routing, fallback and circuit breaking through the HTTP API of a real
``aimesh serve`` process with real upstream simulators."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import openai_endpoint


def send(client: httpx.Client, text: str, agent: str = "agent-1", **fields: Any) -> Any:
    body = {"agent_id": agent, "payload_text": text, **fields}
    return client.post("/messages", json=body)


async def send_many(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(client.post("/messages", json=b) for b in bodies)))


def test_lowest_score_wins_and_fallback_chain_is_ordered(sims, gateways):
    cheap, mid, pricey = sims(), sims(), sims()
    gw = gateways(
        [
            openai_endpoint(cheap, "cheap", cost_per_1k_tokens=0.1, latency_p99_ms=100),
            openai_endpoint(mid, "mid", cost_per_1k_tokens=1.0, latency_p99_ms=100),
            openai_endpoint(pricey, "pricey", cost_per_1k_tokens=10.0, latency_p99_ms=100),
        ]
    )
    with gw.client() as c:
        decision = c.post("/route", json={"agent_id": "a", "payload_text": "hi"}).json()
        assert decision["target_endpoint"] == "cheap"
        assert decision["fallback_endpoints"] == ["mid", "pricey"]
        scores = [decision["score_breakdown"]["total_score"]] + [
            s["total_score"] for s in decision["fallback_scores"]
        ]
        assert scores == sorted(scores)
        for i in range(10):
            r = send(c, f"hello {i}")
            assert r.status_code == 200, r.text
            ack = r.json()
            assert ack["status"] == "success"
            assert ack["endpoint_id"] == "cheap"
            assert ack["tokens_used"] > 0
            assert bytes.fromhex(ack["result"])  # the upstream's answer
    assert cheap.stats()["requests"] >= 10
    assert mid.stats()["requests"] == 0
    assert pricey.stats()["requests"] == 0


def test_route_group_restricts_candidates(sims, gateways):
    a, b = sims(), sims()
    gw = gateways(
        [
            openai_endpoint(a, "small", group="gpt-4o-mini", cost_per_1k_tokens=0.1),
            openai_endpoint(b, "large", group="gpt-4o", cost_per_1k_tokens=5.0),
        ]
    )
    with gw.client() as c:
        r = send(c, "hi", metadata={"model": "gpt-4o"})
        assert r.json()["endpoint_id"] == "large"
        r = send(c, "hi again", metadata={"model": "nope"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "unknown_group"


def test_live_load_spills_over_to_the_next_endpoint(sims, gateways):
    slow_cheap = sims("--latency-ms", "400", "--jitter-ms", "0")
    fast_pricey = sims("--latency-ms", "5", "--jitter-ms", "0")
    gw = gateways(
        [
            openai_endpoint(slow_cheap, "cheap", cost_per_1k_tokens=0.1, capacity=4),
            openai_endpoint(fast_pricey, "pricey", cost_per_1k_tokens=10.0, capacity=100),
        ],
        limits={"rate_limit_rps": 1000},
    )
    bodies = [{"agent_id": "a", "payload_text": f"m{i}"} for i in range(16)]
    responses = asyncio.run(send_many(gw.url, bodies))
    acks = [r.json() for r in responses]
    assert all(a["status"] == "success" for a in acks), acks
    used = {a["endpoint_id"] for a in acks}
    assert used == {"cheap", "pricey"}
    # Capacity is respected: never more than 4 in flight at the cheap one.
    assert slow_cheap.stats()["max_in_flight"] <= 4


def test_fallback_delivers_everything_while_one_endpoint_is_healthy(sims, gateways):
    broken = sims("--failure-rate", "1.0", "--failure-status", "500")
    healthy = sims()
    gw = gateways(
        [
            openai_endpoint(broken, "broken", cost_per_1k_tokens=0.1),
            openai_endpoint(healthy, "healthy", cost_per_1k_tokens=10.0),
        ],
        limits={"rate_limit_rps": 1000},
        delivery={"breaker_failures": 1000, "max_attempts_per_endpoint": 2},
    )
    bodies = [{"agent_id": "a", "payload_text": f"m{i}"} for i in range(100)]
    acks = [r.json() for r in asyncio.run(send_many(gw.url, bodies))]
    assert [a["status"] for a in acks] == ["success"] * 100
    assert {a["endpoint_id"] for a in acks} == {"healthy"}
    assert broken.stats()["requests"] >= 100  # every message tried the best one first


def test_timeout_falls_back(sims, gateways):
    hanging = sims("--latency-ms", "5000", "--jitter-ms", "0")
    healthy = sims()
    gw = gateways(
        [
            openai_endpoint(hanging, "hanging", cost_per_1k_tokens=0.1),
            openai_endpoint(healthy, "healthy", cost_per_1k_tokens=10.0),
        ],
        delivery={"timeout_s": 0.3, "max_attempts_per_endpoint": 1},
    )
    with gw.client() as c:
        t0 = time.monotonic()
        ack = send(c, "hi").json()
        assert ack["status"] == "success"
        assert ack["endpoint_id"] == "healthy"
        assert time.monotonic() - t0 < 4.0  # did not wait for the hanging upstream


def test_all_endpoints_failing_gives_a_failed_ack(sims, gateways):
    broken = sims("--failure-rate", "1.0", "--failure-status", "503")
    gw = gateways([openai_endpoint(broken, "broken")], delivery={"breaker_failures": 1000})
    with gw.client() as c:
        r = send(c, "hi")
        assert r.status_code == 200
        ack = r.json()
        assert ack["status"] == "failed"
        assert ack["error_code"] == "upstream_failed"


def test_circuit_breaker_opens_and_recovers(sims, gateways):
    flaky = sims("--failure-rate", "1.0", "--failure-status", "500")
    backup = sims()
    gw = gateways(
        [
            openai_endpoint(flaky, "flaky", cost_per_1k_tokens=0.1),
            openai_endpoint(backup, "backup", cost_per_1k_tokens=10.0),
        ],
        delivery={"breaker_failures": 3, "breaker_cooldown_s": 1.0, "max_attempts_per_endpoint": 1},
    )
    with gw.client() as c:
        for i in range(5):
            assert send(c, f"a{i}").json()["endpoint_id"] == "backup"
        flaky_calls = flaky.stats()["requests"]
        assert flaky_calls == 3  # then the breaker opened
        assert c.get("/endpoints/flaky").json()["circuit_open"] is True
        for i in range(5):
            assert send(c, f"b{i}").json()["endpoint_id"] == "backup"
        assert flaky.stats()["requests"] == flaky_calls  # no traffic while open
        flaky.configure(failure_rate=0.0)
        time.sleep(1.3)  # cooldown passes -> half-open probe
        assert send(c, "probe").json()["endpoint_id"] == "flaky"
        assert c.get("/endpoints/flaky").json()["circuit_open"] is False
        assert send(c, "after").json()["endpoint_id"] == "flaky"
