"""Budgets, rate limits, dedup and idempotency through the HTTP API of a real
gateway process."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.conftest import openai_endpoint
from tests.test_gateway_routing import send, send_many


def test_budget_is_exact_under_1000_concurrent_requests(sims, gateways):
    # Real usage = the estimate (1 prompt token + 9 completion tokens), so the
    # budget fits exactly 100 messages however they interleave.
    sim = sims("--latency-ms", "200", "--completion-tokens", "9")
    gw = gateways(
        [openai_endpoint(sim, "sim")],
        limits={"rate_limit_rps": 100000, "rate_limit_burst": 100000},
        budgets=[{"agent_id": "spender", "tokens": 1000}],
    )
    bodies = [
        {"agent_id": "spender", "payload_text": f"m{i}", "estimated_cost_tokens": 10}
        for i in range(1000)
    ]
    responses = asyncio.run(send_many(gw.url, bodies))
    admitted = [r.json() for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 402]
    assert len(admitted) + len(refused) == 1000
    assert 0 < len(admitted) <= 100
    assert all(a["tokens_used"] == 10 for a in admitted)
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    with gw.client() as c:
        budget = c.get("/budgets/spender").json()
    assert budget["reserved_tokens"] == 0
    used = sum(a["tokens_used"] for a in admitted)
    assert budget["initial_tokens"] - budget["remaining_tokens"] == used
    assert sim.stats()["requests"] == len(admitted)


def test_budget_402_and_reset(sims, gateways):
    sim = sims("--completion-tokens", "5")
    gw = gateways([openai_endpoint(sim, "sim")])
    with gw.client() as c:
        r = c.post("/budgets", json={"agent_id": "small", "tokens": 30})
        assert r.status_code == 201
        assert r.json()["remaining_tokens"] == 30
        assert send(c, "x", agent="small", estimated_cost_tokens=20).status_code == 200
        r = send(c, "y", agent="small", estimated_cost_tokens=25)
        assert r.status_code == 402
        assert r.json()["error"]["code"] == "budget_exceeded"
        r = c.post("/budgets/small/reset")
        assert r.status_code == 200
        assert r.json()["remaining_tokens"] == 30
        assert send(c, "z", agent="small", estimated_cost_tokens=25).status_code == 200
        assert c.get("/budgets/nobody").status_code == 404
        # An agent without a budget is not capped by one.
        assert send(c, "free", agent="uncapped", estimated_cost_tokens=10**9).status_code == 200


def test_per_message_budget_cap(sims, gateways):
    gw = gateways([openai_endpoint(sims(), "sim")])
    with gw.client() as c:
        r = send(c, "x", estimated_cost_tokens=500, budget_tokens=100)
        assert r.status_code == 402
        assert r.json()["error"]["code"] == "message_budget_exceeded"


def test_rate_limit_429_with_retry_after_and_never_above_rate(sims, gateways):
    sim = sims("--latency-ms", "1")
    gw = gateways(
        [openai_endpoint(sim, "sim")], limits={"rate_limit_rps": 5, "rate_limit_burst": 5}
    )
    statuses = []
    retry_after = []
    with gw.client() as c:
        t0 = time.monotonic()
        for i in range(30):
            r = send(c, f"m{i}", agent="limited")
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after.append(r.headers["retry-after"])
                assert r.json()["error"]["code"] == "rate_limited"
        elapsed = time.monotonic() - t0
        # Another agent has its own bucket.
        assert send(c, "other", agent="someone-else").status_code == 200
    admitted = statuses.count(200)
    assert statuses.count(429) > 0
    assert admitted <= 5 + 5 * elapsed + 1e-9
    assert all(int(v) >= 1 for v in retry_after)


def test_duplicate_is_answered_without_a_second_upstream_call(sims, gateways):
    sim = sims()
    gw = gateways([openai_endpoint(sim, "sim")])
    with gw.client() as c:
        first = send(c, "same question").json()
        second = send(c, "same question").json()
        assert first["status"] == "success"
        assert second["status"] == "duplicate"
        assert second["result"] == first["result"]
        assert second["original_message_id"] == first["original_message_id"]
        # dedup_context makes the same payload a different request.
        third = send(c, "same question", dedup_context="conversation-2").json()
        assert third["status"] == "success"
    assert sim.stats()["requests"] == 2


def test_concurrent_duplicates_wait_for_the_first(sims, gateways):
    sim = sims("--latency-ms", "300", "--jitter-ms", "0")
    gw = gateways([openai_endpoint(sim, "sim")])
    bodies = [{"agent_id": "a", "payload_text": "identical"} for _ in range(10)]
    acks = [r.json() for r in asyncio.run(send_many(gw.url, bodies))]
    statuses = sorted(a["status"] for a in acks)
    assert statuses == ["duplicate"] * 9 + ["success"]
    assert sim.stats()["requests"] == 1


def test_dedup_expires_after_ttl(sims, gateways):
    sim = sims()
    gw = gateways([openai_endpoint(sim, "sim")], limits={"dedup_ttl_s": 1})
    with gw.client() as c:
        assert send(c, "q").json()["status"] == "success"
        assert send(c, "q").json()["status"] == "duplicate"
        time.sleep(1.3)
        assert send(c, "q").json()["status"] == "success"
    assert sim.stats()["requests"] == 2


def test_message_id_reuse_with_another_body_is_409(sims, gateways):
    gw = gateways([openai_endpoint(sims(), "sim")])
    with gw.client() as c:
        mid = "0190f0f0-0000-7000-8000-000000000001"
        assert send(c, "one", message_id=mid).status_code == 200
        r = send(c, "two", message_id=mid)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "message_id_conflict"
        got = c.get(f"/messages/{mid}")
        assert got.status_code == 200
        assert got.json()["status"] == "success"


def test_async_mode_answers_202_and_delivers(sims, gateways):
    sim = sims("--latency-ms", "5")
    gw = gateways([openai_endpoint(sim, "sim")])
    with gw.client() as c:
        r = c.post("/messages?mode=async", json={"agent_id": "a", "payload_text": "later"})
        assert r.status_code == 202
        ack = r.json()
        assert ack["status"] == "received"
        mid = ack["original_message_id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = c.get(f"/messages/{mid}").json()
            if state["status"] != "received":
                break
            time.sleep(0.05)
        assert state["status"] == "success"
        assert state["acknowledgment"]["tokens_used"] > 0


def test_health_ready_and_unknown_routes(sims, gateways):
    gw = gateways([openai_endpoint(sims(), "sim")])
    with httpx.Client(base_url=gw.url) as c:
        assert c.get("/health").json()["status"] == "ok"
        ready = c.get("/ready").json()
        assert ready["status"] == "ready"
        assert ready["routable_endpoints"] == 1
        r = c.get("/nope")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "route_not_found"
        r = c.put("/messages")
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "method_not_allowed"


def test_full_queue_answers_503_with_retry_after(sims, gateways):
    sim = sims("--latency-ms", "500", "--jitter-ms", "0")
    gw = gateways(
        [openai_endpoint(sim, "sim")],
        limits={"max_inflight": 1, "queue_capacity": 2, "rate_limit_rps": 1000},
    )
    bodies = [{"agent_id": "q", "payload_text": f"m{i}"} for i in range(8)]
    responses = asyncio.run(send_many(gw.url, bodies))
    full = [r for r in responses if r.status_code == 503]
    ok = [r for r in responses if r.status_code == 200]
    assert full and ok and len(full) + len(ok) == 8
    assert all(r.json()["error"]["code"] == "queue_full" for r in full)
    assert all(int(r.headers["retry-after"]) >= 1 for r in full)
    assert all(r.json()["status"] == "success" for r in ok)
