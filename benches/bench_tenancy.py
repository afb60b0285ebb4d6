"""What tenancy and shared state cost per message, in process (no HTTP):

- key checks: the admin key and a tenant key (SHA-256 + constant-time
  compare) per request;
- ``Mesh.admit`` for the default tenant and for a tenant with a tier (the
  tier's checks and its token bucket + one-minute window);
- a budget reservation and its settlement, 64 at a time: SQLite (local)
  and Redis (shared by several nodes, a real redis-server on loopback);
- the shared rate-limit check (agent bucket + tenant bucket + tenant
  window in one Redis script), 64 at a time.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimesh import AiMesh, AiMeshConfig, AIMessage
from aimesh.auth import Authenticator
from aimesh.config import TenantConfig
from aimesh.storage.redis_state import RedisSharedState
from aimesh.tenancy import parse_tiers
from tests.redis_server import RedisServer

CONCURRENCY = 64


async def _reserve_settle(store: object, n: int, agent: str) -> float:
    """Reservations + settlements per second, CONCURRENCY in flight."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with sem:
            await store.reserve(agent, f"r{i}", 1)  # type: ignore[attr-defined]
            await store.settle(f"r{i}", 1)  # type: ignore[attr-defined]

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t0)


async def _acquire(shared: RedisSharedState, n: int) -> float:
    sem = asyncio.Semaphore(CONCURRENCY)
    buckets = [("agent:t/a", 1e9, 1e9), ("tenant:t", 1e9, 1e9)]
    windows = [("tenant:t", 10**9, 60.0)]

    async def one() -> None:
        async with sem:
            await shared.acquire(buckets, windows)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t0)


def run(h) -> None:  # type: ignore[no-untyped-def]
    n = 2_000 if h.quick else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        cfg = AiMeshConfig(
            data_dir=tmp,
            rate_limit_rps=1e9,
            tiers=parse_tiers(
                {
                    "bench": {
                        "base": "enterprise",
                        "requests_per_second": 1e9,
                        "burst": 1e9,
                        "requests_per_minute": 10**9,
                    }
                }
            ),
            tenants=[TenantConfig("t", "bench")],
        )

        async def with_mesh() -> None:
            async with AiMesh(cfg) as mesh:
                key = await mesh.tenants.mint_key(mesh.storage, "t")
                auth = Authenticator("admin-key-" + "x" * 32, registry=mesh.tenants)
                h.measure("identify: admin key", lambda: auth.identify("admin-key-" + "x" * 32))
                h.measure("identify: tenant key (sha256)", lambda: auth.identify(key))
                plain = AIMessage(agent_id="a", payload=b"hello")
                tenant = AIMessage(agent_id="a", payload=b"hello")
                tenant.tenant_id = "t"
                h.measure("admit: default tenant", lambda: mesh.admit(plain))
                h.measure("admit: tenant with a tier", lambda: mesh.admit(tenant))
                await mesh.set_budget("a", 10**12)
                rate = await _reserve_settle(mesh.storage, n, "a")
                h.record(f"reserve+settle SQLite ({CONCURRENCY} in flight)", rate, "pairs/s")

        asyncio.run(with_mesh())

    with RedisServer() as server:

        async def with_redis() -> None:
            shared = RedisSharedState(server.url, node_id="bench")
            await shared.open()
            try:
                await shared.set_budget("t/a", 10**12, None)
                rate = await _reserve_settle(shared, n, "t/a")
                h.record(f"reserve+settle Redis ({CONCURRENCY} in flight)", rate, "pairs/s")
                rate = await _acquire(shared, n)
                h.record(f"shared rate check Redis ({CONCURRENCY} in flight)", rate, "checks/s")
            finally:
                await shared.close()

        asyncio.run(with_redis())


if __name__ == "__main__":
    from harness import Harness

    harness = Harness(quick="--quick" in sys.argv)
    harness.suite = "tenancy"
    run(harness)
