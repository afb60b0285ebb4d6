"""Two gateway processes sharing budgets, tenant quotas and rate limits
through a real redis-server; and what happens when Redis goes away: every
message is refused with 503 and Retry-After (fail closed), none is
delivered, and service resumes when Redis is back."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.conftest import openai_endpoint
from tests.redis_server import RedisServer

ADMIN = "admin-key-for-shared-state-tests"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


def two_nodes(gateways: Any, sim: Any, redis: RedisServer, **kw: Any) -> tuple[Any, Any]:
    env = {"AIMESH_REDIS_URL": redis.url, "AIMESH_ADMIN_KEY": ADMIN}
    endpoints = [openai_endpoint(sim, "sim", group="gpt")]
    return gateways(endpoints, env=env, **kw), gateways(endpoints, env=env, **kw)


def send_many(urls: list[str], headers: dict[str, str], bodies: list[dict[str, Any]]) -> list[Any]:
    """POST every body at once, spread over the nodes; the answers."""
    out: list[Any] = [None] * len(bodies)

    def one(i: int) -> None:
        with httpx.Client(base_url=urls[i % len(urls)], timeout=30) as c:
            out[i] = c.post("/messages", json=bodies[i], headers=headers)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_a_budget_is_shared_and_exact_across_two_nodes(
    gateways: Any, sims: Any, redis_server: RedisServer
) -> None:
    sim = sims("--latency-ms", "20")
    a, b = two_nodes(gateways, sim, redis_server)
    with a.client() as c:
        assert (
            c.post(
                "/budgets", json={"agent_id": "team", "tokens": 200}, headers=ADMIN_H
            ).status_code
            == 201
        )
    with b.client() as c:  # set on node a, seen by node b
        assert c.get("/budgets/team", headers=ADMIN_H).json()["initial_tokens"] == 200
    bodies = [
        {"agent_id": "team", "payload_text": f"question {i}", "estimated_cost_tokens": 20}
        for i in range(60)
    ]
    answers = send_many([a.url, b.url], ADMIN_H, bodies)
    ok = [r.json() for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 402]
    assert len(ok) + len(refused) == 60 and refused
    # Both nodes served some, and what was used never passed the budget.
    used = sum(x["tokens_used"] for x in ok)
    with a.client() as c:
        info = c.get("/budgets/team", headers=ADMIN_H).json()
    assert info["reserved_tokens"] == 0
    assert info["remaining_tokens"] == 200 - used >= 0
    assert sim.stats()["requests"] == len(ok)


def test_a_tenant_quota_and_rate_are_shared(
    gateways: Any, sims: Any, redis_server: RedisServer
) -> None:
    sim = sims("--latency-ms", "1")
    tiers = {
        "team": {"base": "enterprise", "requests_per_second": 3, "burst": 3, "tokens_per_month": 0}
    }
    a, b = two_nodes(gateways, sim, redis_server, tiers=tiers)
    # Tenants live in each node's storage: the same tenant on both nodes.
    keys = []
    for node in (a, b):
        with node.client() as c:
            r = c.post("/tenants", json={"tenant_id": "acme", "tier": "team"}, headers=ADMIN_H)
            keys.append(r.json()["api_key"])
    answers = []
    for i, (node, key) in enumerate([(a, keys[0]), (b, keys[1])] * 3):
        r = httpx.post(
            f"{node.url}/messages",
            json={"agent_id": "x", "payload_text": f"r{i}"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        code = r.json()["error"]["code"] if r.status_code != 200 else None
        answers.append((r.status_code, code))
    # A burst of 3 for the tenant across both nodes, not 3 on each.
    assert [a[0] for a in answers].count(200) == 3, answers
    assert [a[1] for a in answers if a[0] == 429] == ["tenant_rate_limited"] * 3


def test_redis_down_fails_closed_and_recovers(
    gateways: Any, sims: Any, redis_server: RedisServer
) -> None:
    sim = sims("--latency-ms", "1")
    node, _ = two_nodes(gateways, sim, redis_server)
    with node.client() as c:
        assert (
            c.post(
                "/messages", json={"agent_id": "a", "payload_text": "before"}, headers=ADMIN_H
            ).status_code
            == 200
        )
        assert c.get("/ready").json()["shared_state"] is True
        before = sim.stats()["requests"]
        redis_server.kill()
        for path, body in (
            ("/messages", {"agent_id": "a", "payload_text": "during"}),
            ("/messages?mode=async", {"agent_id": "a", "payload_text": "during async"}),
            ("/messages/batch", {"messages": [{"agent_id": "a", "payload_text": "in a batch"}]}),
            ("/budgets", {"agent_id": "a", "tokens": 10}),
            (
                "/v1/chat/completions",
                {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]},
            ),
        ):
            r = c.post(path, json=body, headers=ADMIN_H)
            if path == "/messages/batch":
                ack = r.json()["acknowledgments"][0]
                assert (
                    ack["status"] == "rejected" and ack["error_code"] == "shared_state_unavailable"
                )
                continue
            assert r.status_code == 503, (path, r.text)
            assert r.headers["Retry-After"] == "1"
            assert "shared_state_unavailable" in r.text
            assert redis_server.url not in r.text
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "shared_state_unavailable"
        # Nothing was delivered, nothing was accepted for later.
        assert sim.stats()["requests"] == before
        assert c.get("/stats", headers=ADMIN_H).json()["async_accepted"] == 0
        redis_server.restart()
        r = c.post("/messages", json={"agent_id": "a", "payload_text": "after"}, headers=ADMIN_H)
        assert r.status_code == 200 and r.json()["status"] == "success"
        assert c.get("/ready").status_code == 200
    assert redis_server.url not in node.log_text()
