"""The SQLite storage through its public interface, on real files."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aimesh.errors import (
    BudgetExceededError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
)
from aimesh.mesh import body_hash
from aimesh.models import Acknowledgment, AckStatus, AIMessage, EndpointMetrics
from aimesh.storage import SqliteStorage


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def opened(path: Path, **kw) -> SqliteStorage:
    s = SqliteStorage(path, **kw)
    await s.open()
    return s


async def test_budget_exact_under_1000_concurrent_reservations(tmp_path):
    s = await opened(tmp_path)
    await s.set_budget("agent", 1000, None)
    results = await asyncio.gather(
        *(s.reserve("agent", f"r{i}", 10) for i in range(1000)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(admitted) == 100 and len(refused) == 900
    info = await s.get_budget("agent")
    assert (info.reserved_tokens, info.remaining_tokens) == (1000, 0)
    usage = [random.randint(0, 10) for _ in admitted]
    settles = (s.settle(r.reservation_id, u) for r, u in zip(admitted, usage, strict=True))
    await asyncio.gather(*settles)
    await asyncio.gather(*(s.settle(r.reservation_id, 99) for r in admitted))  # idempotent
    info = await s.get_budget("agent")
    assert info.reserved_tokens == 0
    assert info.initial_tokens - info.remaining_tokens == sum(usage)
    await s.close()


async def test_budget_rules(tmp_path):
    clock = Clock()
    s = await opened(tmp_path, clock=clock)
    assert (await s.reserve("nobody", "r0", 10**9)).capped is False
    assert await s.settle("r0", 5) is None
    await s.set_budget("a", 100, reset_at=int(clock.t) + 60, period_s=60)
    r = await s.reserve("a", "r1", 80)
    assert r.capped and (await s.reserve("a", "r1", 80)) == r  # idempotent
    with pytest.raises(BudgetExceededError) as e:
        await s.reserve("a", "r2", 30)
    assert e.value.details == {"remaining": 20, "requested": 30}
    info = await s.settle("r1", 120)  # overshoot is counted
    assert info is not None and info.remaining_tokens == 0
    with pytest.raises(BudgetExceededError):
        await s.reserve("a", "r3", 1)
    clock.t += 61  # automatic reset, next one a period later
    info = await s.get_budget("a")
    assert info.remaining_tokens == 100 and info.reset_at == int(clock.t - 61) + 120
    await s.reserve("a", "r4", 50)
    assert (await s.reset_budget("a")).reserved_tokens == 50
    await s.recover()  # after a crash nothing is in flight
    assert (await s.get_budget("a")).reserved_tokens == 0
    with pytest.raises(NotFoundError):
        await s.reset_budget("nobody")
    await s.close()


async def test_messages_idempotency_and_transitions(tmp_path):
    s = await opened(tmp_path)
    m = AIMessage("a", b"hello", priority=70, metadata={"model": "x"})
    assert (await s.put_message(m, body_hash(m))).created
    again = await s.put_message(m, body_hash(m))
    assert not again.created and again.status is AckStatus.RECEIVED
    other = AIMessage("a", b"different", message_id=m.message_id)
    with pytest.raises(ConflictError):
        await s.put_message(other, body_hash(other))
    first = Acknowledgment(m.message_id, AckStatus.SUCCESS, tokens_used=3)
    second = Acknowledgment(m.message_id, AckStatus.FAILED, error_code="x")
    assert (await s.complete_message(m.message_id, first)) == first
    assert (await s.complete_message(m.message_id, second)) == first
    stored = await s.get_message(m.message_id)
    assert stored is not None and stored.status is AckStatus.SUCCESS
    assert stored.message == m and stored.ack == first
    assert await s.get_message("missing") is None
    await s.close()


async def test_pending_order(tmp_path):
    s = await opened(tmp_path)
    msgs = [
        AIMessage("a", b"1", priority=10),
        AIMessage("a", b"2", priority=90),
        AIMessage("a", b"3", priority=90, deadline_ms=2_000_000_000_000),
        AIMessage("a", b"4", priority=90, deadline_ms=1_900_000_000_000),
        AIMessage("a", b"5", priority=10),
    ]
    for m in msgs:
        await s.put_message(m, body_hash(m))
    pending = await s.pending_messages(10)
    assert [p.payload for p in pending] == [b"4", b"3", b"2", b"1", b"5"]
    assert (await s.count_by_status()) == {"received": 5}
    await s.close()


async def test_dedup_and_endpoints(tmp_path):
    clock = Clock()
    s = await opened(tmp_path, clock=clock)
    ack = Acknowledgment("m1", AckStatus.SUCCESS, result=b"r")
    await s.dedup_put(b"k" * 32, "m1", ack, ttl_s=10)
    rec = await s.dedup_get(b"k" * 32)
    assert rec is not None and rec.ack == ack
    assert [r.message_id for r in await s.dedup_live(10)] == ["m1"]
    clock.t += 11
    assert await s.dedup_get(b"k" * 32) is None
    assert await s.purge_expired() == 1
    ep = EndpointMetrics("e1", url="http://127.0.0.1:1", group="g", tags=["x"])
    await s.save_endpoint(ep)
    assert await s.list_endpoints() == [ep]
    assert await s.delete_endpoint("e1") and not await s.delete_endpoint("e1")
    await s.close()


async def test_an_operation_failing_outside_sqlite_leaves_the_next_ones_alone(tmp_path):
    """Regression: an operation raising something other than an sqlite3 or
    AiMesh error (here SQLite refusing to bind a >64-bit integer) used to
    leave its transaction open, so the next group failed with "cannot start
    a transaction within a transaction" (a 503 for unrelated callers)."""
    s = await opened(tmp_path)

    def too_big(c):
        c.execute("UPDATE budgets SET used = ? WHERE agent_id = 'x'", (1 << 64,))

    with pytest.raises(OverflowError):
        await s._call(too_big)
    await s.set_budget("a", 100, None)  # the next group
    # In the same group as good operations: only the bad one fails, the
    # others are committed.
    results = await asyncio.gather(
        s.set_budget("b", 1, None),
        s._call(too_big),
        s.set_budget("c", 2, None),
        return_exceptions=True,
    )
    assert isinstance(results[1], OverflowError)
    assert (await s.get_budget("b")).initial_tokens == 1
    assert (await s.get_budget("c")).initial_tokens == 2
    await s.close()


async def test_one_process_owns_a_data_dir(tmp_path):
    s = await opened(tmp_path)
    with pytest.raises(ServiceUnavailableError) as e:
        await opened(tmp_path)
    assert e.value.code == "storage_locked"
    await s.close()
    s2 = await opened(tmp_path)  # free again after close
    await s2.close()


async def test_storage_failure_is_a_503_never_an_admission(tmp_path):
    s = await opened(tmp_path)
    await s.set_budget("a", 100, None)
    assert await s.healthy()
    # Make every write fail: the database becomes read-only under the writer.
    assert s._conn is not None
    s._conn.execute("PRAGMA query_only = ON")
    with pytest.raises(ServiceUnavailableError) as e:
        await s.reserve("a", "r", 10)
    assert e.value.code == "storage_unavailable" and e.value.retry_after
    m = AIMessage("a", b"x")
    with pytest.raises(ServiceUnavailableError):
        await s.put_message(m, body_hash(m))
    s._conn.execute("PRAGMA query_only = OFF")
    assert (await s.get_budget("a")).reserved_tokens == 0
    await s.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from aimesh.mesh import body_hash
    from aimesh.models import AIMessage
    from aimesh.storage import SqliteStorage

    async def main():
        s = SqliteStorage(sys.argv[1])
        await s.open()
        i = 0
        while True:
            batch = [AIMessage("a", f"m{i + j}".encode(), message_id=f"id-{i + j}")
                     for j in range(20)]
            await asyncio.gather(*(s.put_message(m, body_hash(m)) for m in batch))
            for m in batch:
                print(m.message_id, flush=True)
            i += 20

    asyncio.run(main())
    """
)


async def test_acknowledged_writes_survive_sigkill(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    acked: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while len(acked) < 2000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(acked) >= 2000
    s = await opened(tmp_path)
    pending = {m.message_id for m in await s.pending_messages(1_000_000)}
    assert set(acked) <= pending  # 0 lost
    await s.close()
