"""Multi-tenancy through the HTTP API of a real gateway: tenants and their
keys, isolation between tenants, tier limits, usage per tenant, and keys
kept out of logs, errors and metrics."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import openai_endpoint

ADMIN = "admin-key-for-tenancy-tests-0123456789"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}

#: Tiers of these tests (built on "free"; each test leans on one limit).
TIERS: dict[str, dict[str, Any]] = {
    "roomy": {
        "base": "enterprise",
        "tokens_per_month": 0,
    },
    "tight": {
        "requests_per_second": 2,
        "burst": 2,
        "requests_per_minute": 1000,
        "tokens_per_month": 0,
        "max_agents": 0,
    },
    "minute": {
        "requests_per_second": 100,
        "burst": 100,
        "requests_per_minute": 3,
        "tokens_per_month": 0,
    },
    "small": {
        "base": "enterprise",
        "tokens_per_month": 60,
        "max_agents": 2,
        "max_priority": 60,
        "max_payload_bytes": 128,
        "allowed_groups": ["mini"],
    },
    "single": {
        "base": "enterprise",
        "max_concurrent": 1,
    },
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def msg(agent: str, text: str, **kw: Any) -> dict[str, Any]:
    return {"agent_id": agent, "payload_text": text, **kw}


@pytest.fixture
def sim(sims: Any) -> Any:
    return sims("--latency-ms", "2")


@pytest.fixture
def gw(gateways: Any, sim: Any) -> Any:
    return gateways(
        [
            openai_endpoint(sim, "big", group="big", cost_per_1k_tokens=10.0),
            openai_endpoint(sim, "mini", group="mini", cost_per_1k_tokens=1.0),
        ],
        env={"AIMESH_ADMIN_KEY": ADMIN},
        tiers=TIERS,
        tenants=[{"tenant_id": "from-config", "tier": "pro"}],
    )


def create(c: httpx.Client, tenant_id: str, tier: str = "roomy") -> str:
    r = c.post("/tenants", json={"tenant_id": tenant_id, "tier": tier}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["api_key"].startswith("amk_") and body["key_id"] in body["api_key"]
    return str(body["api_key"])


def test_keys_are_shown_once_stored_hashed_and_revoked_at_once(gw: Any) -> None:
    with gw.client() as c:
        key = create(c, "acme")
        view = c.get("/tenants/acme", headers=ADMIN_H).json()
        assert view["tier"] == "roomy" and len(view["keys"]) == 1
        assert key not in str(view) and view["keys"][0]["prefix"] == key[: len("amk_") + 12]
        assert c.get("/tenants", headers=ADMIN_H).json()["tenants"][0]["tenant_id"] in (
            "acme",
            "from-config",
        )
        # The key works, and the tenant sees itself (not the list).
        assert c.post("/messages", json=msg("a", "hi"), headers=bearer(key)).status_code == 200
        assert c.get("/tenants/acme", headers=bearer(key)).status_code == 200
        assert c.get("/tenants", headers=bearer(key)).status_code == 403

        # Rotation: the new key works, the old one is refused at once.
        rotated = c.post("/tenants/acme/rotate-key", headers=bearer(key))
        assert rotated.status_code == 201
        new = rotated.json()["api_key"]
        r = c.post("/messages", json=msg("a", "old"), headers=bearer(key))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert c.post("/messages", json=msg("a", "new"), headers=bearer(new)).status_code == 200

        # A second key, revoked by id: refused at once, the other still works.
        extra = c.post("/tenants/acme/keys", headers=ADMIN_H).json()
        r = c.delete(f"/tenants/acme/keys/{extra['key_id']}", headers=bearer(new))
        assert r.status_code == 200 and r.json()["revoked"] == [extra["key_id"]]
        assert c.get("/stats", headers=bearer(extra["api_key"])).status_code == 401
        assert c.get("/stats", headers=bearer(new)).status_code == 200

        # Disabling the tenant refuses every key; its data stays.
        assert c.delete("/tenants/acme", headers=ADMIN_H).json()["disabled"] is True
        assert c.post("/messages", json=msg("a", "x"), headers=bearer(new)).status_code == 401
        # A well-formed key that never existed: the same answer.
        forged = "amk_0123456789ab_" + "A" * 43
        assert c.get("/stats", headers=bearer(forged)).json()["error"]["code"] == "invalid_api_key"
        # Keys are required once an admin key is set.
        assert c.post("/messages", json=msg("a", "x")).status_code == 401
    gw.stop()
    db = sqlite3.connect(gw.data_dir / "aimesh.db")
    rows = db.execute("SELECT key_id, key_hash, revoked_at_ms FROM api_keys").fetchall()
    db.close()
    stored = {r[1] for r in rows}
    for k in (key, new, extra["api_key"]):
        assert hashlib.sha256(k.encode()).hexdigest() in stored
    dump = (gw.data_dir / "aimesh.db").read_bytes()
    for k in (key, new, extra["api_key"]):
        assert k.encode() not in dump
    assert all(r[2] is not None for r in rows)  # disabled: every key revoked
    # Nothing of a key reaches the log, not even the admin key.
    log = gw.log_text()
    for secret in (key, new, extra["api_key"], ADMIN, forged):
        assert secret not in log


def test_tenants_are_isolated(gw: Any, sim: Any) -> None:
    """Tenant A's key on each of tenant B's resources: 403 or 404, and none
    of B's data in the answer."""
    with gw.client() as c:
        a = bearer(create(c, "tenant-a"))
        b = bearer(create(c, "tenant-b"))
        # B's resources: a sync and an async message, a budget, usage.
        shared_id = str(uuid.uuid4())
        rb = c.post("/messages", json=msg("my-agent", "b-secret", message_id=shared_id), headers=b)
        assert rb.status_code == 200
        async_id = str(uuid.uuid4())
        r = c.post(
            "/messages?mode=async",
            json=msg("my-agent", "b-async-secret", message_id=async_id),
            headers=b,
        )
        assert r.status_code == 202
        assert (
            c.post("/budgets", json={"agent_id": "my-agent", "tokens": 777}, headers=b).status_code
            == 201
        )
        # The same agent name and the same message id in A: its own, no 409.
        ra = c.post("/messages", json=msg("my-agent", "a-text", message_id=shared_id), headers=a)
        assert ra.status_code == 200 and ra.json()["status"] == "success"
        assert (
            c.post("/budgets", json={"agent_id": "my-agent", "tokens": 5000}, headers=a).status_code
            == 201
        )

        # B's data (the ids A names in its own requests may be echoed).
        b_secrets = ("b-secret", "b-async-secret", "777", b"b-secret".hex(), b"b-async".hex())
        checks = [
            ("GET", f"/messages/{async_id}", None, {404}),
            ("GET", "/budgets/my-agent", None, {200}),  # A's own budget of that name
            ("POST", "/budgets/other/reset", None, {404}),
            ("GET", "/tenants/tenant-b", None, {404}),
            ("PATCH", "/tenants/tenant-b", {"tier": "roomy"}, {403}),
            ("DELETE", "/tenants/tenant-b", None, {403}),
            ("POST", "/tenants/tenant-b/keys", None, {404}),
            ("POST", "/tenants/tenant-b/rotate-key", None, {404}),
            ("DELETE", "/tenants/tenant-b/keys/0123456789ab", None, {404}),
            ("GET", "/tenants", None, {403}),
            ("POST", "/tenants", {"tenant_id": "evil", "tier": "roomy"}, {403}),
            ("POST", "/endpoints", {"endpoint_id": "http://127.0.0.1:9/x"}, {403}),
            ("DELETE", "/endpoints/big", None, {403}),
            ("GET", "/endpoints", None, {403}),
            ("GET", "/endpoints/big", None, {403}),
            ("GET", "/metrics", None, {403}),
            ("GET", "/dashboard/state", None, {403}),
            ("GET", "/stats", None, {200}),
        ]
        for method, path, body, expected in checks:
            r = c.request(method, path, json=body, headers=a)
            assert r.status_code in expected, (method, path, r.status_code, r.text)
            for secret in b_secrets:
                assert secret not in r.text, (method, path, secret)
        # A's budget of "my-agent" is A's, not B's 777.
        assert c.get("/budgets/my-agent", headers=a).json()["initial_tokens"] == 5000
        assert c.get("/budgets/my-agent", headers=b).json()["initial_tokens"] == 777
        # Naming B's tenant with A's key is refused; the admin may.
        h = {**a, "X-AiMesh-Tenant": "tenant-b"}
        assert c.get(f"/messages/{async_id}", headers=h).status_code == 403
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = c.get(f"/messages/{async_id}", headers={**ADMIN_H, "X-AiMesh-Tenant": "tenant-b"})
            if got.json().get("status") == "success":
                break
            time.sleep(0.05)
        assert got.status_code == 200 and got.json()["status"] == "success"
        # The admin without the header sees the default tenant: not B's.
        assert c.get(f"/messages/{async_id}", headers=ADMIN_H).status_code == 404

        # Dedup is per tenant: B's payload sent by A is a new upstream call.
        before = sim.stats()["requests"]
        r = c.post("/messages", json=msg("my-agent", "b-secret"), headers=a)
        assert r.json()["status"] == "success" and sim.stats()["requests"] == before + 1
        r = c.post("/messages", json=msg("my-agent", "b-secret"), headers=b)
        assert r.json()["status"] == "duplicate"  # B's own earlier answer
        assert sim.stats()["requests"] == before + 1

        # /stats with a tenant key: that tenant's usage only.
        stats_a = c.get("/stats", headers=a).json()
        stats_b = c.get("/stats", headers=b).json()
        assert stats_a["tenant_id"] == "tenant-a" and "endpoints" not in stats_a
        assert stats_a["messages"] == {"success": 2}
        assert stats_b["messages"] == {"success": 2, "duplicate": 1}
        assert stats_a["tokens_used"] > 0 and stats_a["cost"] > 0
        assert set(stats_a["by_endpoint"]) <= {"big", "mini"}
        everything = c.get("/stats", headers=ADMIN_H).json()
        assert {"tenant-a", "tenant-b"} <= set(everything["tenants"])

        # Prometheus: the tenant label, for the operator only.
        text = c.get("/metrics", headers=ADMIN_H).text
        assert 'tenant="tenant-a"' in text and 'tenant="tenant-b"' in text
        assert ADMIN not in text and "amk_" not in text


def test_tier_limits_are_enforced(gw: Any, sim: Any) -> None:
    with gw.client() as c:
        tight = bearer(create(c, "t-tight", "tight"))
        minute = bearer(create(c, "t-minute", "minute"))
        small = bearer(create(c, "t-small", "small"))

        # Requests per second: the burst of 2, then 429 with Retry-After.
        codes = [
            c.post("/messages", json=msg("a", f"r{i}"), headers=tight).status_code for i in range(4)
        ]
        assert codes[:2] == [200, 200] and 429 in codes[2:]
        r = c.post("/messages", json=msg("a", "again"), headers=tight)
        assert r.status_code == 429 and r.json()["error"]["code"] == "tenant_rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        # Another tenant is not slowed by it.
        assert c.post("/messages", json=msg("a", "ok"), headers=small).status_code == 200

        # Requests per minute: a sliding window of 3.
        codes = [
            c.post("/messages", json=msg("a", f"m{i}"), headers=minute).status_code
            for i in range(4)
        ]
        assert codes == [200, 200, 200, 429]

        # The small tier: payload size, priority, models, agents, tokens.
        r = c.post("/messages", json=msg("a", "x" * 200), headers=small)
        assert r.status_code == 400 and r.json()["error"]["code"] == "payload_too_large"
        r = c.post("/messages", json=msg("a", "x", priority=61), headers=small)
        assert r.status_code == 403 and r.json()["error"]["code"] == "priority_not_allowed"
        r = c.post("/messages", json=msg("a", "x", metadata={"model": "big"}), headers=small)
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
        # Without a model it is routed within the tier's groups only.
        r = c.post("/messages", json=msg("a", "no model"), headers=small)
        assert r.json()["endpoint_id"] == "mini"
        models = c.get("/v1/models", headers=small).json()["data"]
        assert [m["id"] for m in models] == ["mini"]
        assert c.post("/messages", json=msg("b", "x"), headers=small).status_code == 200
        r = c.post("/messages", json=msg("c", "x"), headers=small)
        assert r.status_code == 403 and r.json()["error"]["code"] == "max_agents_reached"

        # Monthly tokens: 60 a month; each message reserves its estimate
        # and settles at the upstream's usage.
        quota = c.get("/stats", headers=small).json()["quota"]
        assert quota["tokens_per_month"] == 60 and quota["used_tokens"] > 0
        assert quota["resets_at"] > time.time()
        statuses = []
        for i in range(10):
            r = c.post("/messages", json=msg("a", f"spend {i}"), headers=small)
            statuses.append(r.status_code)
            if r.status_code == 402:
                assert r.json()["error"]["code"] == "tenant_quota_exceeded"
                break
        assert statuses[-1] == 402
        quota = c.get("/stats", headers=small).json()["quota"]
        assert quota["used_tokens"] <= 60 + 40 and quota["reserved_tokens"] == 0
        # A higher tier (admin only) raises the quota; usage is kept.
        assert c.patch("/tenants/t-small", json={"tier": "pro"}, headers=small).status_code == 403
        r = c.patch("/tenants/t-small", json={"tier": "roomy"}, headers=ADMIN_H)
        assert r.status_code == 200 and r.json()["quota"] is None
        assert c.post("/messages", json=msg("a", "after"), headers=small).status_code == 200


def test_concurrency_of_a_tenant_is_bounded(gw: Any, sim: Any) -> None:
    sim.configure(latency_ms=300)
    with gw.client() as c:
        single = bearer(create(c, "t-single", "single"))
        other = bearer(create(c, "t-other", "roomy"))
        results: list[int] = []

        def send(h: dict[str, str], i: int) -> None:
            with gw.client() as cc:
                results.append(cc.post("/messages", json=msg("a", f"c{i}"), headers=h).status_code)

        threads = [threading.Thread(target=send, args=(single, i)) for i in range(4)]
        threads += [threading.Thread(target=send, args=(other, 10 + i)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert results.count(429) >= 1 and results.count(200) >= 4


def test_config_tenants_and_a_bad_tenant_id(gw: Any) -> None:
    with gw.client() as c:
        view = c.get("/tenants/from-config", headers=ADMIN_H).json()
        assert view["tier"] == "pro" and view["keys"] == []
        key = c.post("/tenants/from-config/rotate-key", headers=ADMIN_H).json()["api_key"]
        assert c.post("/messages", json=msg("x", "hi"), headers=bearer(key)).status_code == 200
        for bad in ("Bad", "-x", "a/b", "", "x" * 64):
            r = c.post("/tenants", json={"tenant_id": bad}, headers=ADMIN_H)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_tenant_id"
        r = c.post("/tenants", json={"tenant_id": "ok", "tier": "gold"}, headers=ADMIN_H)
        assert r.json()["error"]["code"] == "invalid_tier"
        assert (
            c.post("/tenants", json={"tenant_id": "from-config"}, headers=ADMIN_H).status_code
            == 409
        )
