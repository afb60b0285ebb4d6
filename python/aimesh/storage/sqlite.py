"""Embedded storage: one SQLite database (WAL) owned by one writer thread.

Operations from the event loop are queued to the writer, which runs every
queued operation in ONE transaction and commits once (group commit): each
caller gets its answer only after its commit, and throughput grows with
load. Each operation runs inside its own savepoint, so one that fails (say,
a budget that does not fit) leaves the others of the batch untouched.

Durability: the database is in WAL mode, where a committed transaction
survives a crash of the process (even SIGKILL) with ``synchronous=NORMAL``;
``synchronous=FULL`` (an fsync per commit) also survives power loss. A group
that holds a *durable* operation (accepting an async message) is committed
with FULL when ``durable=True``; everything else (budgets, acks, dedup) with
NORMAL, so the common path does not wait for the disk.

Budgets are exact because check-and-reserve is a single conditional UPDATE
executed by the only writer. One process owns a data directory (a lock file
makes a second one fail clearly).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from aimesh.errors import (
    AiMeshError,
    BudgetExceededError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
)
from aimesh.models import Acknowledgment, AckStatus, AIMessage, BudgetInfo, EndpointMetrics
from aimesh.storage.base import (
    DedupRecord,
    PutResult,
    Reservation,
    StoredMessage,
    budget_info,
    next_reset,
)
from aimesh.tenancy.records import ApiKeyRecord, Tenant

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Item:
    op: Op
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    durable: bool


SCHEMA_VERSION = 2
MAX_GROUP = 2048

# Message ids are unique per tenant: two tenants may use the same id without
# seeing (or conflicting with) each other. The default tenant is ''.
MESSAGES_TABLE = """
CREATE TABLE IF NOT EXISTS messages (
    tenant_id TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    body_hash BLOB NOT NULL,
    priority INTEGER NOT NULL,
    deadline_ms INTEGER,
    status TEXT NOT NULL,
    message BLOB NOT NULL,
    ack BLOB,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
"""

SCHEMA = (
    MESSAGES_TABLE
    + """
CREATE INDEX IF NOT EXISTS messages_pending
    ON messages (priority DESC, deadline_ms IS NULL, deadline_ms)
    WHERE status = 'received';
CREATE TABLE IF NOT EXISTS budgets (
    agent_id TEXT PRIMARY KEY,
    limit_tokens INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    reset_at INTEGER,
    period_s INTEGER,
    last_reset_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    tokens INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    key BLOB PRIMARY KEY,
    message_id TEXT NOT NULL,
    ack BLOB NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint_id TEXT PRIMARY KEY,
    config BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    disabled_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS tenant_agents (
    tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
"""
)

# Version 1 keyed messages by message_id alone (no tenants).
MIGRATE_1_TO_2 = (
    "ALTER TABLE messages RENAME TO messages_v1;"
    + MESSAGES_TABLE
    + "INSERT INTO messages (tenant_id, message_id, agent_id, body_hash, priority, deadline_ms,"
    " status, message, ack, created_at_ms, updated_at_ms)"
    " SELECT '', message_id, agent_id, body_hash, priority, deadline_ms, status, message, ack,"
    " created_at_ms, updated_at_ms FROM messages_v1;"
    "DROP TABLE messages_v1;"
    "DROP INDEX IF EXISTS messages_pending;"
)


def _ack_bytes(ack: Acknowledgment | None) -> bytes | None:
    return None if ack is None else orjson.dumps(ack.to_json_dict())


def _ack_from(blob: bytes | None) -> Acknowledgment | None:
    return None if blob is None else Acknowledgment.from_json_dict(orjson.loads(blob))


class SqliteStorage:
    """The embedded :class:`~aimesh.storage.base.Storage`."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "aimesh.db"
        self.durable = durable
        self.clock = clock
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._sync_mode = ""
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(self.data_dir / "aimesh.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ServiceUnavailableError(
                "storage_locked", f"{self.data_dir} is in use by another AiMesh process"
            ) from None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate(conn)
        except sqlite3.Error as e:
            self._unlock()
            raise ServiceUnavailableError(
                "storage_unavailable", f"cannot open {self.path}: {e}"
            ) from None
        self._conn = conn
        self._thread = threading.Thread(target=self._writer, name="aimesh-sqlite", daemon=True)
        self._thread.start()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"database schema {version} is newer than this AiMesh ({SCHEMA_VERSION})"
            )
        if version == 1:
            conn.executescript("BEGIN;" + MIGRATE_1_TO_2 + "COMMIT;")
        if version < SCHEMA_VERSION:
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    async def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    async def healthy(self) -> bool:
        try:
            return bool(await self._call(lambda c: c.execute("SELECT 1").fetchone()[0] == 1))
        except AiMeshError:
            return False

    # -- the writer -----------------------------------------------------------------

    def _writer(self) -> None:
        conn = self._conn
        assert conn is not None
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                results = self._run_group(conn, batch)
            except Exception as e:  # never let the writer die with callers waiting
                err = ServiceUnavailableError(
                    "storage_unavailable", f"storage error: {e}", retry_after=1
                )
                results = [(None, err) for _ in batch]
            for item, (value, error) in zip(batch, results, strict=True):
                item.loop.call_soon_threadsafe(_resolve, item.future, value, error)

    def _run_group(
        self, conn: sqlite3.Connection, batch: list[_Item]
    ) -> list[tuple[Any, BaseException | None]]:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            mode = "FULL" if self.durable and any(i.durable for i in batch) else "NORMAL"
            if mode != self._sync_mode:
                conn.execute(f"PRAGMA synchronous={mode}")
                self._sync_mode = mode
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                op = item.op
                conn.execute("SAVEPOINT op")
                try:
                    value = op(conn)
                except AiMeshError as e:
                    conn.execute("ROLLBACK TO op")
                    results.append((None, e))
                except sqlite3.Error as e:
                    conn.execute("ROLLBACK TO op")
                    results.append((None, _unavailable(e)))
                except Exception as e:
                    # Any other failure (a bug, a value SQLite cannot bind) is
                    # that caller's alone: undone, and the group goes on.
                    conn.execute("ROLLBACK TO op")
                    results.append((None, e))
                else:
                    results.append((value, None))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as e:
            # Never leave the transaction open: the next group's BEGIN would
            # fail ("cannot start a transaction within a transaction").
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            # Nothing of this group was committed: every caller learns it.
            return [(None, _unavailable(e)) for _ in batch]
        return results

    async def _call(self, op: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        if self._thread is None:
            raise ServiceUnavailableError("storage_closed", "storage is not open", retry_after=1)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Item(op, fut, loop, durable))
        # Shielded: once queued, the operation runs; a cancelled caller must
        # not leave its future to be resolved on a dead loop.
        return await asyncio.shield(fut)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- messages -----------------------------------------------------------------

    async def put_message(
        self,
        msg: AIMessage,
        body_hash: bytes,
        status: AckStatus = AckStatus.RECEIVED,
        ack: Acknowledgment | None = None,
    ) -> PutResult:
        row = _message_row(msg, body_hash, status, ack, self._now_ms())

        def op(c: sqlite3.Connection) -> PutResult:
            return _insert_message(c, row, msg, body_hash, status, ack)

        # Accepting a message (status RECEIVED) is what must survive power loss.
        return await self._call(op, durable=status is AckStatus.RECEIVED)

    async def put_messages(
        self, items: Sequence[tuple[AIMessage, bytes]]
    ) -> list[PutResult | AiMeshError]:
        now = self._now_ms()
        rows = [(_message_row(m, h, AckStatus.RECEIVED, None, now), m, h) for m, h in items]

        def op(c: sqlite3.Connection) -> list[PutResult | AiMeshError]:
            out: list[PutResult | AiMeshError] = []
            for row, msg, body_hash in rows:
                try:
                    out.append(_insert_message(c, row, msg, body_hash, AckStatus.RECEIVED, None))
                except ConflictError as e:
                    out.append(e)
            return out

        return await self._call(op, durable=True)

    async def complete_message(
        self, message_id: str, ack: Acknowledgment, tenant_id: str = ""
    ) -> Acknowledgment:
        now = self._now_ms()
        blob = _ack_bytes(ack)

        def op(c: sqlite3.Connection) -> Acknowledgment:
            cur = c.execute(
                "UPDATE messages SET status = ?, ack = ?, updated_at_ms = ?"
                " WHERE tenant_id = ? AND message_id = ? AND status = 'received'",
                (ack.status.value, blob, now, tenant_id, message_id),
            )
            if cur.rowcount == 1:
                return ack
            row = c.execute(
                "SELECT ack FROM messages WHERE tenant_id = ? AND message_id = ?",
                (tenant_id, message_id),
            ).fetchone()
            if row is None:
                raise NotFoundError("message_not_found", f"no message {message_id!r}")
            return _ack_from(row[0]) or ack

        return await self._call(op)

    async def get_message(self, message_id: str, tenant_id: str = "") -> StoredMessage | None:
        def op(c: sqlite3.Connection) -> StoredMessage | None:
            row = c.execute(
                "SELECT message, status, ack, created_at_ms, updated_at_ms FROM messages"
                " WHERE tenant_id = ? AND message_id = ?",
                (tenant_id, message_id),
            ).fetchone()
            if row is None:
                return None
            return StoredMessage(
                _stored_message(row[0], tenant_id),
                AckStatus(row[1]),
                _ack_from(row[2]),
                row[3],
                row[4],
            )

        return await self._call(op)

    async def pending_messages(self, limit: int) -> list[AIMessage]:
        def op(c: sqlite3.Connection) -> list[AIMessage]:
            rows = c.execute(
                "SELECT message, tenant_id FROM messages WHERE status = 'received'"
                " ORDER BY priority DESC, deadline_ms IS NULL, deadline_ms, rowid LIMIT ?",
                (limit,),
            ).fetchall()
            return [_stored_message(r[0], r[1]) for r in rows]

        return await self._call(op)

    async def count_by_status(self) -> dict[str, int]:
        def op(c: sqlite3.Connection) -> dict[str, int]:
            rows = c.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall()
            return {r[0]: r[1] for r in rows}

        return await self._call(op)

    # -- budgets ------------------------------------------------------------------

    def _roll(self, c: sqlite3.Connection, agent_id: str) -> tuple[Any, ...] | None:
        """The budget row, after an automatic reset if its time has come."""
        row = c.execute(
            "SELECT limit_tokens, used, reserved, reset_at, period_s, last_reset_ms"
            " FROM budgets WHERE agent_id = ?",
            (agent_id,),
        ).fetchone()
        if row is None:
            return None
        limit, used, reserved, reset_at, period_s, last_reset_ms = row
        now = self.clock()
        if reset_at is not None and now >= reset_at:
            reset_at = next_reset(reset_at, period_s, now)
            used, last_reset_ms = 0, int(now * 1000)
            c.execute(
                "UPDATE budgets SET used = 0, reset_at = ?, last_reset_ms = ? WHERE agent_id = ?",
                (reset_at, last_reset_ms, agent_id),
            )
        return (limit, used, reserved, reset_at, period_s, last_reset_ms)

    def _info(self, agent_id: str, row: tuple[Any, ...]) -> BudgetInfo:
        limit, used, reserved, reset_at, _, last_reset_ms = row
        return budget_info(agent_id, limit, used, reserved, reset_at, last_reset_ms, self.clock())

    def _budget_or_404(self, c: sqlite3.Connection, agent_id: str) -> BudgetInfo:
        row = self._roll(c, agent_id)
        if row is None:
            raise NotFoundError("budget_not_found", f"no budget for agent {agent_id!r}")
        return self._info(agent_id, row)

    async def set_budget(
        self, agent_id: str, tokens: int, reset_at: int | None, period_s: int | None = None
    ) -> BudgetInfo:
        """A fresh budget: the limit is ``tokens`` and nothing is used yet
        (reservations of in-flight messages are kept and still settle)."""
        now = self._now_ms()

        def op(c: sqlite3.Connection) -> BudgetInfo:
            c.execute(
                "INSERT INTO budgets (agent_id, limit_tokens, used, reserved, reset_at, period_s,"
                " last_reset_ms) VALUES (?, ?, 0, 0, ?, ?, ?)"
                " ON CONFLICT(agent_id) DO UPDATE SET limit_tokens = excluded.limit_tokens,"
                " used = 0, reset_at = excluded.reset_at, period_s = excluded.period_s,"
                " last_reset_ms = excluded.last_reset_ms",
                (agent_id, tokens, reset_at, period_s, now),
            )
            return self._budget_or_404(c, agent_id)

        return await self._call(op)

    async def get_budget(self, agent_id: str) -> BudgetInfo | None:
        def op(c: sqlite3.Connection) -> BudgetInfo | None:
            row = self._roll(c, agent_id)
            return None if row is None else self._info(agent_id, row)

        return await self._call(op)

    async def list_budgets(self) -> list[BudgetInfo]:
        def op(c: sqlite3.Connection) -> list[BudgetInfo]:
            ids = [r[0] for r in c.execute("SELECT agent_id FROM budgets").fetchall()]
            return [self._budget_or_404(c, i) for i in ids]

        return await self._call(op)

    async def reset_budget(self, agent_id: str) -> BudgetInfo:
        now = self._now_ms()

        def op(c: sqlite3.Connection) -> BudgetInfo:
            cur = c.execute(
                "UPDATE budgets SET used = 0, last_reset_ms = ? WHERE agent_id = ?", (now, agent_id)
            )
            if cur.rowcount == 0:
                raise NotFoundError("budget_not_found", f"no budget for agent {agent_id!r}")
            return self._budget_or_404(c, agent_id)

        return await self._call(op)

    async def update_budget_limit(self, agent_id: str, tokens: int) -> BudgetInfo | None:
        """Change a budget's limit, keeping what is used and reserved (a
        tenant changing tier mid-month); None if there is no budget."""

        def op(c: sqlite3.Connection) -> BudgetInfo | None:
            c.execute("UPDATE budgets SET limit_tokens = ? WHERE agent_id = ?", (tokens, agent_id))
            row = self._roll(c, agent_id)
            return None if row is None else self._info(agent_id, row)

        return await self._call(op)

    async def reserve(self, agent_id: str, reservation_id: str, tokens: int) -> Reservation:
        def op(c: sqlite3.Connection) -> Reservation:
            existing = c.execute(
                "SELECT agent_id, tokens FROM reservations WHERE reservation_id = ?",
                (reservation_id,),
            ).fetchone()
            if existing is not None:  # idempotent
                return Reservation(reservation_id, existing[0], existing[1], True)
            row = self._roll(c, agent_id)
            if row is None:
                return Reservation(reservation_id, agent_id, tokens, False)
            # The check and the reservation are one statement: exact under
            # any concurrency.
            cur = c.execute(
                "UPDATE budgets SET reserved = reserved + ?"
                " WHERE agent_id = ? AND limit_tokens - used - reserved >= ?",
                (tokens, agent_id, tokens),
            )
            if cur.rowcount == 0:
                info = self._info(agent_id, row)
                raise BudgetExceededError(
                    "budget_exceeded",
                    f"agent {agent_id!r} has {info.remaining_tokens} tokens left, "
                    f"{tokens} requested",
                    details={"remaining": info.remaining_tokens, "requested": tokens},
                )
            c.execute(
                "INSERT INTO reservations (reservation_id, agent_id, tokens) VALUES (?, ?, ?)",
                (reservation_id, agent_id, tokens),
            )
            return Reservation(reservation_id, agent_id, tokens, True)

        return await self._call(op)

    async def settle(self, reservation_id: str, actual_tokens: int) -> BudgetInfo | None:
        """Release the reservation and count ``actual_tokens`` as used (an
        overshoot is counted too; later reservations then fail)."""

        def op(c: sqlite3.Connection) -> BudgetInfo | None:
            row = c.execute(
                "SELECT agent_id, tokens FROM reservations WHERE reservation_id = ?",
                (reservation_id,),
            ).fetchone()
            if row is None:
                return None  # uncapped, or already settled
            agent_id, tokens = row
            c.execute("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))
            c.execute(
                "UPDATE budgets SET reserved = MAX(0, reserved - ?), used = used + ?"
                " WHERE agent_id = ?",
                (tokens, max(0, actual_tokens), agent_id),
            )
            budget = self._roll(c, agent_id)
            return None if budget is None else self._info(agent_id, budget)

        return await self._call(op)

    async def release(self, reservation_id: str) -> BudgetInfo | None:
        return await self.settle(reservation_id, 0)

    async def recover(self) -> None:
        """Release every reservation: after a restart none is in flight (the
        messages they belonged to are re-reserved when re-delivered)."""

        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM reservations")
            c.execute("UPDATE budgets SET reserved = 0")

        await self._call(op)

    # -- dedup --------------------------------------------------------------------

    async def dedup_get(self, key: bytes) -> DedupRecord | None:
        now = self._now_ms()

        def op(c: sqlite3.Connection) -> DedupRecord | None:
            row = c.execute(
                "SELECT message_id, ack, expires_at_ms FROM dedup"
                " WHERE key = ? AND expires_at_ms > ?",
                (key, now),
            ).fetchone()
            if row is None:
                return None
            ack = _ack_from(row[1])
            assert ack is not None
            return DedupRecord(key, row[0], ack, row[2])

        return await self._call(op)

    async def dedup_put(
        self, key: bytes, message_id: str, ack: Acknowledgment, ttl_s: float
    ) -> None:
        expires = self._now_ms() + int(ttl_s * 1000)
        blob = _ack_bytes(ack)

        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR REPLACE INTO dedup (key, message_id, ack, expires_at_ms)"
                " VALUES (?, ?, ?, ?)",
                (key, message_id, blob, expires),
            )

        await self._call(op)

    async def dedup_live(self, limit: int) -> list[DedupRecord]:
        now = self._now_ms()

        def op(c: sqlite3.Connection) -> list[DedupRecord]:
            rows = c.execute(
                "SELECT key, message_id, ack, expires_at_ms FROM dedup WHERE expires_at_ms > ?"
                " ORDER BY expires_at_ms DESC LIMIT ?",
                (now, limit),
            ).fetchall()
            out = []
            for key, mid, blob, exp in rows:
                ack = _ack_from(blob)
                assert ack is not None
                out.append(DedupRecord(bytes(key), mid, ack, exp))
            return out

        return await self._call(op)

    async def purge_expired(self) -> int:
        now = self._now_ms()
        return await self._call(
            lambda c: c.execute("DELETE FROM dedup WHERE expires_at_ms <= ?", (now,)).rowcount
        )

    # -- endpoints ------------------------------------------------------------------

    async def save_endpoint(self, endpoint: EndpointMetrics) -> None:
        blob = orjson.dumps(endpoint.to_json_dict())
        await self._call(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO endpoints (endpoint_id, config) VALUES (?, ?)",
                (endpoint.endpoint_id, blob),
            )
        )

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        return bool(
            await self._call(
                lambda c: (
                    c.execute(
                        "DELETE FROM endpoints WHERE endpoint_id = ?", (endpoint_id,)
                    ).rowcount
                )
            )
        )

    async def list_endpoints(self) -> list[EndpointMetrics]:
        rows = await self._call(
            lambda c: c.execute("SELECT config FROM endpoints ORDER BY endpoint_id").fetchall()
        )
        return [EndpointMetrics.from_json_dict(orjson.loads(r[0])) for r in rows]

    # -- tenants and keys ---------------------------------------------------------

    async def save_tenant(self, tenant: Tenant) -> None:
        await self._call(
            lambda c: c.execute(
                "INSERT INTO tenants (tenant_id, tier, name, created_at_ms, disabled_at_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(tenant_id) DO UPDATE SET tier = excluded.tier,"
                " name = excluded.name, disabled_at_ms = excluded.disabled_at_ms",
                (
                    tenant.tenant_id,
                    tenant.tier,
                    tenant.name,
                    tenant.created_at_ms,
                    tenant.disabled_at_ms,
                ),
            ),
            durable=True,
        )

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT tenant_id, tier, name, created_at_ms, disabled_at_ms FROM tenants"
                " ORDER BY tenant_id"
            ).fetchall()
        )
        return [Tenant(*r) for r in rows]

    async def save_api_key(self, key: ApiKeyRecord) -> None:
        await self._call(
            lambda c: c.execute(
                "INSERT INTO api_keys (key_id, tenant_id, key_hash, created_at_ms, revoked_at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (key.key_id, key.tenant_id, key.key_hash, key.created_at_ms, key.revoked_at_ms),
            ),
            durable=True,
        )

    async def revoke_api_keys(
        self, tenant_id: str, key_ids: Sequence[str] | None, at_ms: int
    ) -> list[str]:
        """Revoke the tenant's active keys among ``key_ids`` (all when None);
        answer the ids revoked."""

        def op(c: sqlite3.Connection) -> list[str]:
            rows = c.execute(
                "SELECT key_id FROM api_keys WHERE tenant_id = ? AND revoked_at_ms IS NULL",
                (tenant_id,),
            ).fetchall()
            ids = [r[0] for r in rows if key_ids is None or r[0] in key_ids]
            c.executemany(
                "UPDATE api_keys SET revoked_at_ms = ? WHERE key_id = ?", [(at_ms, i) for i in ids]
            )
            return ids

        # Revocation must survive a crash the moment it is answered.
        return await self._call(op, durable=True)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT key_id, tenant_id, key_hash, created_at_ms, revoked_at_ms FROM api_keys"
                " ORDER BY created_at_ms, key_id"
            ).fetchall()
        )
        return [ApiKeyRecord(*r) for r in rows]

    async def add_tenant_agent(self, tenant_id: str, agent_id: str) -> None:
        await self._call(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO tenant_agents (tenant_id, agent_id) VALUES (?, ?)",
                (tenant_id, agent_id),
            )
        )

    async def list_tenant_agents(self) -> list[tuple[str, str]]:
        rows = await self._call(
            lambda c: c.execute("SELECT tenant_id, agent_id FROM tenant_agents").fetchall()
        )
        return [(r[0], r[1]) for r in rows]


def _unavailable(e: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError("storage_unavailable", f"storage error: {e}", retry_after=1)


def _resolve(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages (tenant_id, message_id, agent_id, body_hash, priority,"
    " deadline_ms, status, message, ack, created_at_ms, updated_at_ms)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


def _stored_message(blob: bytes, tenant_id: str) -> AIMessage:
    # The tenant is not part of the wire form: it comes from the row.
    msg = AIMessage.from_protobuf(bytes(blob))
    msg.tenant_id = tenant_id
    return msg


def _message_row(
    msg: AIMessage, body_hash: bytes, status: AckStatus, ack: Acknowledgment | None, now: int
) -> tuple[Any, ...]:
    return (
        msg.tenant_id,
        msg.message_id,
        msg.agent_id,
        body_hash,
        msg.priority,
        msg.deadline_ms,
        status.value,
        msg.to_protobuf(),
        _ack_bytes(ack),
        now,
        now,
    )


def _insert_message(
    c: sqlite3.Connection,
    row: tuple[Any, ...],
    msg: AIMessage,
    body_hash: bytes,
    status: AckStatus,
    ack: Acknowledgment | None,
) -> PutResult:
    """Insert if absent; an existing id (of the same tenant) answers its
    stored state, or a conflict when its body differs."""
    if c.execute(_INSERT_MESSAGE, row).rowcount == 1:
        return PutResult(True, status, ack)
    stored = c.execute(
        "SELECT body_hash, status, ack FROM messages WHERE tenant_id = ? AND message_id = ?",
        (msg.tenant_id, msg.message_id),
    ).fetchone()
    if bytes(stored[0]) != body_hash:
        raise ConflictError(
            "message_id_conflict",
            f"message_id {msg.message_id} was already used with another body",
        )
    return PutResult(False, AckStatus(stored[1]), _ack_from(stored[2]))
