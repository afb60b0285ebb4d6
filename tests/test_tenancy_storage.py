"""Tenancy through the Python API with a real SQLite file: the monthly
quota resets at the start of each UTC month, and a data directory written
before tenants existed is migrated without losing a message."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from aimesh import AiMesh, AiMeshConfig
from aimesh.config import TenantConfig
from aimesh.errors import BudgetExceededError
from aimesh.models import AckStatus, AIMessage, EndpointMetrics
from aimesh.storage import SqliteStorage
from aimesh.storage.base import month_start_after
from aimesh.tenancy import parse_tiers


def test_monthly_quota_resets_at_the_start_of_the_month(tmp_path: Path, sims: Any) -> None:
    sim = sims("--latency-ms", "1")
    clock = [time.time()]
    cfg = AiMeshConfig(
        data_dir=str(tmp_path),
        endpoints=[EndpointMetrics("sim", url=sim.url)],
        tiers=parse_tiers({"tiny": {"base": "enterprise", "tokens_per_month": 50}}),
        tenants=[TenantConfig("t1", "tiny"), TenantConfig("t2", "tiny")],
    )

    def message(text: str, tenant: str = "t1") -> AIMessage:
        m = AIMessage(agent_id="a", payload=text.encode(), estimated_cost_tokens=20)
        m.tenant_id = tenant
        return m

    async def scenario() -> None:
        storage = SqliteStorage(tmp_path, clock=lambda: clock[0])
        async with AiMesh(cfg, storage=storage) as mesh:
            first = await mesh.quota("t1")
            assert first is not None and first.reset_at == month_start_after(clock[0])
            refused = None
            for i in range(10):
                try:
                    await mesh.process_message(message(f"spend {i}"))
                except BudgetExceededError as e:
                    refused = e
                    break
            assert refused is not None and refused.code == "tenant_quota_exceeded"
            # Another tenant of the same tier has its own quota.
            ok = await mesh.process_message(message("other tenant", "t2"))
            assert ok.status is AckStatus.SUCCESS
            spent = await mesh.quota("t1")
            assert spent is not None and spent.remaining_tokens < 20 and spent.reserved_tokens == 0
            # One second into the next month: the quota is whole again,
            # and the reset after that is the month after.
            assert first.reset_at is not None
            clock[0] = first.reset_at + 1
            fresh = await mesh.quota("t1")
            assert fresh is not None and fresh.remaining_tokens == 50
            assert fresh.reset_at == month_start_after(first.reset_at + 1) > first.reset_at
            ack = await mesh.process_message(message("new month"))
            assert ack.status is AckStatus.SUCCESS
            # A batch keeps each message's own tenant unless told one.
            before = mesh.metrics.tenant_stats("t2")["messages_total"]
            acks = await mesh.process_batch([message("batch a", "t2"), message("batch b", "t2")])
            assert [a.status for a in acks] == [AckStatus.SUCCESS] * 2
            assert mesh.metrics.tenant_stats("t2")["messages_total"] == before + 2

    asyncio.run(scenario())


V1_MESSAGES = """
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, body_hash BLOB NOT NULL,
    priority INTEGER NOT NULL, deadline_ms INTEGER, status TEXT NOT NULL,
    message BLOB NOT NULL, ack BLOB, created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX messages_pending ON messages (priority DESC, deadline_ms IS NULL, deadline_ms)
    WHERE status = 'received';
"""


def test_a_v1_data_directory_is_migrated_with_its_pending_messages(tmp_path: Path) -> None:
    pending = AIMessage(agent_id="old", payload=b"accepted before the upgrade")
    done = AIMessage(agent_id="old", payload=b"answered before the upgrade")
    db = sqlite3.connect(tmp_path / "aimesh.db")
    db.executescript(V1_MESSAGES)
    for m, status in ((pending, "received"), (done, "success")):
        db.execute(
            "INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?)",
            (m.message_id, m.agent_id, b"h", 50, None, status, m.to_protobuf(), None, 1, 1),
        )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    async def scenario() -> None:
        storage = SqliteStorage(tmp_path)
        await storage.open()
        try:
            restored = await storage.pending_messages(10)
            assert [m.message_id for m in restored] == [pending.message_id]
            assert restored[0].tenant_id == "" and restored[0].payload == pending.payload
            stored = await storage.get_message(done.message_id)
            assert stored is not None and stored.status is AckStatus.SUCCESS
            # The new tables exist: tenants can be stored.
            assert await storage.list_tenants() == []
        finally:
            await storage.close()

    asyncio.run(scenario())
    db = sqlite3.connect(tmp_path / "aimesh.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_unknown_tier_in_config_is_refused() -> None:
    from aimesh.errors import ValidationError

    with pytest.raises(ValidationError, match="unknown tier"):
        AiMeshConfig(tenants=[TenantConfig("x", "gold")]).check()
    with pytest.raises(ValidationError, match="base"):
        parse_tiers({"x": {"base": "nope"}})
    with pytest.raises(ValidationError, match="unknown setting"):
        parse_tiers({"x": {"requests_per_hour": 3}})
