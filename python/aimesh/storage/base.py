"""The storage interface. Every operation is one atomic step (one SQLite
transaction, or one Redis script), so backends are interchangeable without
touching the pipeline."""

from __future__ import annotations

import calendar
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aimesh.errors import AiMeshError
from aimesh.models import Acknowledgment, AckStatus, AIMessage, BudgetInfo, EndpointMetrics
from aimesh.tenancy.records import ApiKeyRecord, Tenant

#: ``period_s`` of a budget that resets at the start of every calendar
#: month (UTC), as tenant token quotas do. Not accepted from the public API
#: (it requires ``period_s >= 0``).
MONTHLY = -1


def month_start_after(now_s: float) -> int:
    """The first second (epoch, UTC) of the calendar month after ``now_s``."""
    d = _dt.datetime.fromtimestamp(now_s, _dt.timezone.utc)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def next_reset(reset_at: int, period_s: int | None, now_s: float) -> int | None:
    """When a budget whose ``reset_at`` has passed resets next: ``None`` for
    a one-off reset, the next period boundary after ``now_s`` otherwise."""
    if period_s == MONTHLY:
        return month_start_after(now_s)
    if period_s:
        missed = int((now_s - reset_at) // period_s) + 1
        return reset_at + missed * period_s
    return None


def budget_info(
    agent_id: str,
    limit: int,
    used: int,
    reserved: int,
    reset_at: int | None,
    last_reset_ms: int,
    now_s: float,
) -> BudgetInfo:
    """A budget as callers see it, from what a backend stores (the same
    arithmetic for every backend)."""
    elapsed = max(1.0, now_s - last_reset_ms / 1000)
    return BudgetInfo(
        agent_id=agent_id,
        initial_tokens=limit,
        remaining_tokens=max(0, limit - used - reserved),
        reserved_tokens=reserved,
        consumption_rate=round(used / elapsed, 6),
        reset_at=reset_at,
    )


@dataclass(slots=True)
class PutResult:
    """``created`` is False when the message_id was already stored with the
    same body (an idempotent retry): ``status``/``ack`` are the stored ones."""

    created: bool
    status: AckStatus
    ack: Acknowledgment | None = None


@dataclass(slots=True)
class StoredMessage:
    message: AIMessage
    status: AckStatus
    ack: Acknowledgment | None
    created_at_ms: int
    updated_at_ms: int


@dataclass(slots=True)
class Reservation:
    """A budget reservation; ``capped`` is False for an agent without a
    budget (nothing was reserved)."""

    reservation_id: str
    agent_id: str
    tokens: int
    capped: bool


@dataclass(slots=True)
class DedupRecord:
    key: bytes
    message_id: str
    ack: Acknowledgment
    expires_at_ms: int


class BudgetStore(Protocol):
    """Token budgets and reservations: the local storage, or Redis when
    several nodes share them. Check-and-reserve is one atomic step."""

    async def set_budget(
        self, agent_id: str, tokens: int, reset_at: int | None, period_s: int | None = None
    ) -> BudgetInfo: ...
    async def get_budget(self, agent_id: str) -> BudgetInfo | None: ...
    async def reset_budget(self, agent_id: str) -> BudgetInfo: ...
    async def update_budget_limit(self, agent_id: str, tokens: int) -> BudgetInfo | None:
        """New limit, same usage; None if the agent has no budget."""
        ...

    async def reserve(self, agent_id: str, reservation_id: str, tokens: int) -> Reservation:
        """Atomic check-and-reserve; ``BudgetExceededError`` if it does not fit."""
        ...

    async def settle(self, reservation_id: str, actual_tokens: int) -> BudgetInfo | None:
        """Release the reservation and add the real usage (idempotent)."""
        ...

    async def release(self, reservation_id: str) -> BudgetInfo | None: ...
    async def list_budgets(self) -> list[BudgetInfo]: ...


class Storage(BudgetStore, Protocol):
    """Durable state of one gateway."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def healthy(self) -> bool: ...
    async def recover(self) -> None:
        """At start-up: release reservations left by a crash."""
        ...

    # messages
    async def put_message(
        self,
        msg: AIMessage,
        body_hash: bytes,
        status: AckStatus = AckStatus.RECEIVED,
        ack: Acknowledgment | None = None,
    ) -> PutResult:
        """Insert if absent (on disk when this returns). Same id, other body
        -> ``ConflictError("message_id_conflict")``."""
        ...

    async def put_messages(
        self, items: Sequence[tuple[AIMessage, bytes]]
    ) -> list[PutResult | AiMeshError]:
        """Many ``put_message`` (status RECEIVED) in one durable write; each
        item answers its result or its error (a conflict fails only its own
        message)."""
        ...

    async def complete_message(
        self, message_id: str, ack: Acknowledgment, tenant_id: str = ""
    ) -> Acknowledgment:
        """RECEIVED -> the ack's status. Idempotent: the first ack wins and is
        returned."""
        ...

    async def get_message(self, message_id: str, tenant_id: str = "") -> StoredMessage | None:
        """A message of one tenant (message ids are unique per tenant)."""
        ...

    async def pending_messages(self, limit: int) -> list[AIMessage]:
        """RECEIVED messages by priority desc, deadline asc (none last), arrival."""
        ...

    async def count_by_status(self) -> dict[str, int]: ...

    # dedup
    async def dedup_get(self, key: bytes) -> DedupRecord | None: ...
    async def dedup_put(
        self, key: bytes, message_id: str, ack: Acknowledgment, ttl_s: float
    ) -> None: ...
    async def dedup_live(self, limit: int) -> list[DedupRecord]: ...
    async def purge_expired(self) -> int: ...

    # endpoints
    async def save_endpoint(self, endpoint: EndpointMetrics) -> None: ...
    async def delete_endpoint(self, endpoint_id: str) -> bool: ...
    async def list_endpoints(self) -> list[EndpointMetrics]: ...

    # tenants, keys (hashes only) and the agents each tenant has used
    async def save_tenant(self, tenant: Tenant) -> None: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def save_api_key(self, key: ApiKeyRecord) -> None: ...
    async def revoke_api_keys(
        self, tenant_id: str, key_ids: Sequence[str] | None, at_ms: int
    ) -> list[str]: ...
    async def list_api_keys(self) -> list[ApiKeyRecord]: ...
    async def add_tenant_agent(self, tenant_id: str, agent_id: str) -> None: ...
    async def list_tenant_agents(self) -> list[tuple[str, str]]: ...
