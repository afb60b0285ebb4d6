"""The Mesh: AiMesh's message pipeline, in one place.

Every entry point (the embedded API, HTTP, QUIC, federation) calls the same
stages in this order::

    validate -> rate limit -> dedup (+ single-flight) -> budget reserve
    -> enqueue (priority, deadline) -> route -> deliver (retries, fallback,
    circuit breaker) -> settle budget with real usage -> ack + metrics

Rejections before delivery raise :mod:`aimesh.errors` exceptions (the HTTP
layer maps them to 4xx/5xx). Delivery failures are answered with a ``failed``
acknowledgment carrying an ``error_code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aimesh import _native, telemetry
from aimesh.config import AiMeshConfig
from aimesh.endpoints import DeliveryRequest, DeliveryResult, StreamSink
from aimesh.endpoints.delivery import Deliverer
from aimesh.errors import (
    AiMeshError,
    BudgetExceededError,
    ConflictError,
    NotFoundError,
    QueueFullError,
    RateLimitError,
    RoutingError,
    ServiceUnavailableError,
    ValidationError,
)
from aimesh.logs import log_message
from aimesh.metrics import MeshMetrics
from aimesh.models import (
    MAX_INT64,
    MAX_PERIOD_S,
    Acknowledgment,
    AckStatus,
    AIMessage,
    BudgetInfo,
    EndpointMetrics,
    scoped,
    unscoped,
)
from aimesh.router import Router, RoutingDecision, decision_to_json
from aimesh.storage import BudgetStore, PutResult, Storage, open_storage
from aimesh.storage.base import MONTHLY, month_start_after
from aimesh.tenancy.admission import (
    WINDOW_S,
    TierAdmission,
    check_model,
    tenant_rate_limited,
)
from aimesh.tenancy.registry import TenantRegistry
from aimesh.tenancy.tiers import Tier
from aimesh.tracing import new_trace_id

log = logging.getLogger("aimesh.mesh")

#: Routing decisions kept in ``AiMesh.recent_decisions``.
RECENT_DECISIONS = 50
#: How long a rejected async submission should wait before retrying.
QUEUE_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class RecentDecision:
    """One routing decision of a real delivery, kept as the router made it
    (turned into JSON only when someone reads it, not on the hot path)."""

    decision: RoutingDecision
    message_id: str
    agent_id: str
    at_ms: int

    def to_json_dict(self) -> dict[str, object]:
        record = decision_to_json(self.decision, self.message_id)
        record["agent_id"] = self.agent_id
        record["at_ms"] = self.at_ms
        return record


@dataclass(slots=True)
class _Job:
    """A message admitted past budget reservation, waiting for delivery."""

    message: AIMessage
    #: Budget reservations to settle when the message is done (the agent's
    #: budget and the tenant's monthly quota, when they exist).
    reservations: tuple[str, ...]
    started: float
    future: asyncio.Future[Acknowledgment]
    seq: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)
    sink: StreamSink | None = None
    enqueued_ns: int = 0


def quota_key(tenant_id: str) -> str:
    """The budget row of a tenant's monthly token quota (``@`` is in
    neither agent nor tenant ids, so it collides with no agent)."""
    return f"@tenant/{tenant_id}"


def body_hash(msg: AIMessage) -> bytes:
    """Identity of a message's content, for message_id idempotency (409)."""
    return _native.dedup_key(msg.agent_id, msg.payload, msg.dedup_context, "body")


class AiMesh:
    """The message pipeline with its router, limiters, queue, dedup table,
    storage and delivery engine.

    The router, limiters and queue are usable right after construction (the
    embedded API); :meth:`start` opens storage and starts delivery."""

    def __init__(self, config: AiMeshConfig | None = None, *, storage: Storage | None = None):
        self.config = config or AiMeshConfig()
        cfg = self.config
        self.router = Router(cfg.w_cost, cfg.w_load, cfg.w_latency, cfg.normalize)
        self.limiter = _native.TokenBucket(
            cfg.rate_limit_rps,
            cfg.effective_burst,
            global_rate=cfg.global_rate_limit_rps or None,
            global_burst=(cfg.global_rate_limit_rps or None),
        )
        self.dedup = _native.DedupTable(cfg.dedup_ttl_s)
        # Recent message ids -> body hash, so a reused id with another body is
        # a 409 without a storage read on the hot path.
        self.recent_ids = _native.DedupTable(cfg.dedup_ttl_s)
        self.queue = _native.PriorityQueue(cfg.queue_capacity)
        self.metrics = MeshMetrics(self)
        self.deliverer = Deliverer(
            self.router.native,
            timeout_s=cfg.timeout_s,
            max_attempts_per_endpoint=cfg.max_attempts_per_endpoint,
            breaker_failures=cfg.breaker_failures,
            breaker_cooldown_s=cfg.breaker_cooldown_s,
        )
        self.endpoints: dict[str, EndpointMetrics] = {}
        # Last known budget of each (tenant-scoped) agent, for the
        # Prometheus gauges (a scrape must not wait on storage).
        self.budget_cache: dict[str, BudgetInfo] = {}
        #: Tenants, tiers and keys; the checks tiers put on messages.
        self.tenants = TenantRegistry(cfg.tiers)
        self.tier_admission = TierAdmission(on_new_agent=self._persist_agent)
        #: Budgets, quotas and rate limits shared by several nodes (Redis),
        #: when ``redis_url`` is set; else budgets live in ``storage``.
        self.shared: Any = None
        #: The last routing decisions of real deliveries, newest last (for
        #: the dashboard and debugging; bounded).
        self.recent_decisions: deque[RecentDecision] = deque(maxlen=RECENT_DECISIONS)
        self._storage = storage
        self._wakeup: asyncio.Event | None = None
        # Set whenever a delivery attempt ends and frees endpoint capacity.
        self._capacity = asyncio.Event()
        self.deliverer.on_release = self._capacity.set
        self._dispatcher: asyncio.Task[None] | None = None
        self._async_backlog = _native.PriorityQueue(max(cfg.queue_capacity * 10, 100_000))
        self._async_wakeup: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._started = False
        self._draining = False
        self._active = 0
        for ep in cfg.endpoints:
            self.register_endpoint(ep)

    # -- lifecycle ----------------------------------------------------------

    @property
    def budgets(self) -> BudgetStore:
        """Where budgets and tenant quotas live: Redis when shared, else the
        local storage."""
        return self.shared if self.shared is not None else self.storage

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise ServiceUnavailableError("not_started", "call `await mesh.start()` first")
        return self._storage

    async def start(self) -> None:
        """Open storage, restore endpoints, budgets and pending messages, and
        start the dispatcher and the async workers."""
        if self._started:
            return
        cfg = self.config
        if self._storage is None:
            self._storage = open_storage(Path(cfg.data_dir), durable=cfg.durable_sync)
        await self._storage.open()
        await self._storage.recover()
        await self._storage.purge_expired()
        if cfg.redis_url and self.shared is None:
            from aimesh.storage.redis_state import RedisSharedState

            self.shared = RedisSharedState(cfg.redis_url, node_id=_node_id(cfg))
        if self.shared is not None:
            await self.shared.open()
            await self.shared.recover()
        loop = asyncio.get_running_loop()
        # Duplicates of messages answered before a restart are still answered
        # from their first result (the TTL restarts from now).
        for rec in await self._storage.dedup_live(limit=100_000):
            done: asyncio.Future[Acknowledgment] = loop.create_future()
            done.set_result(rec.ack)
            self.dedup.set(rec.key, done)
        for ep in await self._storage.list_endpoints():
            self.register_endpoint(ep)
        budgets = self.budgets
        for b in cfg.budgets:
            if await budgets.get_budget(b.agent_id) is None:
                await budgets.set_budget(b.agent_id, b.tokens, b.reset_at, b.period_s)
        await self.tenants.load(self._storage)
        for t in cfg.tenants:
            await self.tenants.ensure(self._storage, t.tenant_id, t.tier, t.name)
        for tenant_id, agent_id in await self._storage.list_tenant_agents():
            self.tier_admission.agents[tenant_id].add(agent_id)
        for tenant in self.tenants.tenants.values():
            await self.sync_quota(tenant.tenant_id)
        for info in await budgets.list_budgets():
            self._cache_budget(info)
        self._wakeup = asyncio.Event()
        self._async_wakeup = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="aimesh-dispatch")
        self._workers = [
            asyncio.create_task(self._async_worker(), name=f"aimesh-async-{i}")
            for i in range(cfg.async_workers)
        ]
        pending = await self._storage.pending_messages(limit=1_000_000)
        for msg in pending:
            self._async_backlog.push(msg, msg.priority, msg.deadline_ms)
        if pending:
            log.info("recovered %d pending messages", len(pending))
            self._async_wakeup.set()
        if cfg.health_check_interval_s > 0:
            self.deliverer.start_health_checks(cfg.health_check_interval_s)
        self._started = True

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Stop accepting, let in-flight deliveries finish (bounded), stop
        workers and close storage. RECEIVED messages stay on disk."""
        if not self._started:
            return
        self._draining = True
        deadline = time.monotonic() + drain_timeout_s
        while (self._active or len(self.queue)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for t in [*self._workers, *self._tasks]:
            t.cancel()
        if self._dispatcher:
            self._dispatcher.cancel()
        await asyncio.gather(*self._workers, *self._tasks, return_exceptions=True)
        if self._dispatcher:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await self.deliverer.aclose()
        await self.storage.close()
        if self.shared is not None:
            await self.shared.close()
        self._started = False

    async def __aenter__(self) -> AiMesh:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- endpoints and budgets ------------------------------------------------

    def register_endpoint(self, endpoint: EndpointMetrics) -> None:
        """Add or replace an endpoint in the router and the delivery engine."""
        self.endpoints[endpoint.endpoint_id] = endpoint
        self.router.register_endpoint(endpoint)
        self.deliverer.add_endpoint(endpoint)

    async def add_endpoint(self, endpoint: EndpointMetrics) -> None:
        """Register an endpoint and persist it (API-registered endpoints
        survive a restart)."""
        await self.storage.save_endpoint(endpoint)
        self.register_endpoint(endpoint)

    async def remove_endpoint(self, endpoint_id: str) -> None:
        if endpoint_id not in self.endpoints:
            raise NotFoundError("endpoint_not_found", f"no endpoint {endpoint_id!r}")
        await self.storage.delete_endpoint(endpoint_id)
        del self.endpoints[endpoint_id]
        self.router.remove_endpoint(endpoint_id)
        self.deliverer.remove_endpoint(endpoint_id)

    def endpoint_view(self, endpoint_id: str) -> dict[str, Any]:
        """The endpoint's configuration with its live figures."""
        ep = self.endpoints.get(endpoint_id)
        state = self.router.endpoint(endpoint_id)
        if ep is None or state is None:
            raise NotFoundError("endpoint_not_found", f"no endpoint {endpoint_id!r}")
        d = ep.to_json_dict()
        d.update(
            current_load=state.current_load,
            latency_p99_ms=round(state.latency_p99_ms, 3),
            error_rate=round(state.error_rate, 6),
            health_status=state.health,
            circuit_open=endpoint_id in self.deliverer.open_circuits(),
            requests=state.requests,
            failures=state.failures,
        )
        return d

    async def set_budget(
        self,
        agent_id: str,
        tokens: int,
        reset_at: int | None = None,
        period_s: int | None = None,
        *,
        tenant_id: str = "",
    ) -> BudgetInfo:
        """Set an agent's budget (of ``tenant_id``'s agent of that name)."""
        _native.validate_fields(agent_id, 1)
        # Bounded before storage: SQLite refuses integers past 64 bits, which
        # would surface as a 503 storage error instead of the caller's 400.
        if not 0 <= tokens <= MAX_INT64:
            raise ValidationError("invalid_tokens", "tokens must be between 0 and 2^63-1")
        if reset_at is not None and not 0 <= reset_at <= MAX_INT64:
            raise ValidationError("invalid_reset_at", "reset_at must be between 0 and 2^63-1")
        if period_s is not None and not 0 <= period_s <= MAX_PERIOD_S:
            raise ValidationError(
                "invalid_period_s", f"period_s must be between 0 and {MAX_PERIOD_S}"
            )
        key = scoped(tenant_id, agent_id)
        info = await self.budgets.set_budget(key, tokens, reset_at, period_s)
        return _own(self._cache_budget(info))

    async def get_budget(self, agent_id: str, *, tenant_id: str = "") -> BudgetInfo:
        _native.validate_fields(agent_id, 1)
        info = await self.budgets.get_budget(scoped(tenant_id, agent_id))
        if info is None:
            raise NotFoundError("budget_not_found", f"no budget for agent {agent_id!r}")
        return _own(self._cache_budget(info))

    async def reset_budget(self, agent_id: str, *, tenant_id: str = "") -> BudgetInfo:
        _native.validate_fields(agent_id, 1)
        try:
            info = await self.budgets.reset_budget(scoped(tenant_id, agent_id))
        except NotFoundError:
            raise NotFoundError("budget_not_found", f"no budget for agent {agent_id!r}") from None
        return _own(self._cache_budget(info))

    def _cache_budget(self, info: BudgetInfo) -> BudgetInfo:
        self.budget_cache[info.agent_id] = info
        return info

    def metrics_budgets(self) -> list[tuple[str, BudgetInfo]]:
        """``(tenant, budget)`` of every agent budget as last seen (updated
        on every set, read and settle); quotas are not agent budgets."""
        return [
            (k.rpartition("/")[0], _own(info))
            for k, info in self.budget_cache.items()
            if not k.startswith("@")
        ]

    # -- tenants ------------------------------------------------------------------

    async def sync_quota(self, tenant_id: str) -> BudgetInfo | None:
        """Make the tenant's monthly token quota match its tier: created on
        first need (resetting at the start of each UTC month), its limit
        changed with the tier (what is used this month is kept)."""
        tier = self.tenants.tier_of(tenant_id)
        key = quota_key(tenant_id)
        if tier is None or tier.tokens_per_month is None:
            return None
        info = await self.budgets.update_budget_limit(key, tier.tokens_per_month)
        if info is None:
            info = await self.budgets.set_budget(
                key, tier.tokens_per_month, month_start_after(time.time()), MONTHLY
            )
        return self._cache_budget(info)

    async def quota(self, tenant_id: str) -> BudgetInfo | None:
        """The tenant's monthly quota now (None when its tier has none)."""
        tier = self.tenants.tier_of(tenant_id)
        if tier is None or tier.tokens_per_month is None:
            return None
        info = await self.budgets.get_budget(quota_key(tenant_id))
        return None if info is None else self._cache_budget(info)

    def _persist_agent(self, tenant_id: str, agent_id: str) -> None:
        if self._started:
            self._spawn(self._save_agent(tenant_id, agent_id))

    async def _save_agent(self, tenant_id: str, agent_id: str) -> None:
        with contextlib.suppress(AiMeshError):
            await self.storage.add_tenant_agent(tenant_id, agent_id)

    # -- the pipeline -------------------------------------------------------------

    def admit(self, msg: AIMessage, *, validated: bool = False) -> Tier | None:
        """Stages that need no I/O: validate, check the route group, the
        tenant's tier and the rate limits (these go to Redis instead when
        budgets are shared: see :meth:`_admit`). Raise the matching error;
        answer the tenant's tier. ``validated=True`` when a native batch
        pass already applied the protocol rules and the group check."""
        if self._draining:
            raise ServiceUnavailableError("draining", "the gateway is shutting down", retry_after=1)
        tier = self.tenants.active_tier(msg.tenant_id)
        if not msg.trace_id:
            # Every message gets a W3C trace id: in its ack, its log line
            # and its spans (not part of its identity: see body_hash).
            msg.trace_id = new_trace_id()
        if not validated or self.config.max_payload_bytes < _native.MAX_PAYLOAD_BYTES:
            self._validate(msg)
            group = msg.group
            if group is not None and group not in self.router.groups():
                raise NotFoundError("unknown_group", f"no endpoints serve model {group!r}")
        if tier is not None:
            try:
                self.tier_admission.check(msg, tier)
            except AiMeshError as e:
                self.metrics.rejected(e.code)
                raise
        if self.shared is not None:
            return tier
        allowed, retry_after = self.limiter.try_acquire(msg.scoped_agent)
        if not allowed:
            self.metrics.rejected("rate_limited")
            raise RateLimitError(
                "rate_limited",
                f"rate limit of {self.config.rate_limit_rps:g}/s exceeded",
                retry_after=_ceil_retry(retry_after),
            )
        if tier is not None:
            try:
                self.tier_admission.acquire(msg.tenant_id, tier)
            except RateLimitError:
                self.metrics.rejected("tenant_rate_limited")
                raise
        return tier

    async def _admit(self, msg: AIMessage, *, validated: bool = False) -> Tier | None:
        """:meth:`admit`, then the shared rate limits (one atomic Redis
        call for the agent's, the tenant's and the global limiter). A Redis
        failure refuses the message (503): limits fail closed."""
        tier = self.admit(msg, validated=validated)
        if self.shared is None:
            return tier
        cfg = self.config
        buckets = [(f"agent:{msg.scoped_agent}", cfg.rate_limit_rps, cfg.effective_burst)]
        windows: list[tuple[str, int, float]] = []
        if cfg.global_rate_limit_rps:
            buckets.append(("global", cfg.global_rate_limit_rps, cfg.global_rate_limit_rps))
        if tier is not None:
            buckets.append((f"tenant:{msg.tenant_id}", tier.requests_per_second, tier.burst))
            windows.append((f"tenant:{msg.tenant_id}", tier.requests_per_minute, WINDOW_S))
        try:
            allowed, retry_after, refused = await self.shared.acquire_detail(buckets, windows)
        except AiMeshError as e:
            self.metrics.rejected(e.code)
            raise
        if not allowed:
            if tier is not None and refused.startswith("tenant:"):
                self.metrics.rejected("tenant_rate_limited")
                raise tenant_rate_limited(tier, retry_after)
            self.metrics.rejected("rate_limited")
            raise RateLimitError(
                "rate_limited", "rate limit exceeded", retry_after=_ceil_retry(retry_after)
            )
        return tier

    def check_idempotency(self, msg: AIMessage) -> None:
        """Same message_id (of the same tenant) with another body -> 409."""
        digest = body_hash(msg)
        new, existing = self.recent_ids.insert_if_absent(msg.scoped_id.encode(), digest)
        if not new and existing != digest:
            raise ConflictError(
                "message_id_conflict",
                f"message_id {msg.message_id} was already used with another body",
            )

    async def process_message(
        self,
        msg: AIMessage,
        *,
        validated: bool = False,
        sink: StreamSink | None = None,
    ) -> Acknowledgment:
        """Run the whole pipeline for one message and answer its
        acknowledgment (``success``, ``failed`` or ``duplicate``). With a
        ``sink``, a chat completion is streamed into it as the upstream
        answers (the ack's ``result`` then holds every event sent; a
        duplicate is not streamed: its ``result`` is the original's events)."""
        self._require_started()
        t0 = telemetry.now_ns() if telemetry.enabled else 0
        tier = await self._admit(msg, validated=validated)
        self.check_idempotency(msg)
        if telemetry.enabled:
            telemetry.record(
                "aimesh.admit",
                msg.trace_id,
                msg.message_id,
                t0,
                telemetry.now_ns(),
                **{"aimesh.agent_id": msg.agent_id},
            )
        if tier is not None:
            self.tier_admission.begin(msg.tenant_id, tier)
        try:
            ack = await self._run(msg, sink)
        finally:
            if tier is not None:
                self.tier_admission.end(msg.tenant_id)
        self._spawn(self._record_sync(msg, ack))
        return ack

    async def submit(self, msg: AIMessage, *, validated: bool = False) -> Acknowledgment:
        """Async mode: admit, write the message to disk, answer ``received``.
        Workers deliver it later in priority order; the final ack is read
        with :meth:`get_message`."""
        self._require_started()
        await self._admit(msg, validated=validated)
        if len(self._async_backlog) >= self._async_backlog.capacity:
            raise QueueFullError("queue_full", "async backlog is full", retry_after=1)
        result = await self.storage.put_message(msg, body_hash(msg))
        self._accepted(msg, result)
        return _received_ack(msg)

    async def submit_many(
        self,
        messages: Sequence[AIMessage],
        *,
        validated: bool = False,
    ) -> list[Acknowledgment]:
        """Async mode for many messages with one durable write: each is
        admitted (or answered ``rejected``), the admitted ones are stored
        together, then all are acknowledged ``received``."""
        self._require_started()
        acks: list[Acknowledgment | None] = [None] * len(messages)
        room = self._async_backlog.capacity - len(self._async_backlog)
        admitted: list[int] = []
        for i, m in enumerate(messages):
            try:
                await self._admit(m, validated=validated)
                if len(admitted) >= room:
                    raise QueueFullError("queue_full", "async backlog is full", retry_after=1)
            except AiMeshError as e:
                acks[i] = _error_ack(m, e)
            else:
                admitted.append(i)
        if admitted:
            try:
                stored = await self.storage.put_messages(
                    [(messages[i], body_hash(messages[i])) for i in admitted]
                )
            except AiMeshError as e:
                stored = [e] * len(admitted)
            for i, result in zip(admitted, stored, strict=True):
                m = messages[i]
                if isinstance(result, AiMeshError):
                    acks[i] = _error_ack(m, result)
                else:
                    self._accepted(m, result)
                    acks[i] = _received_ack(m)
        return [a for a in acks if a is not None]

    def _accepted(self, msg: AIMessage, result: PutResult) -> None:
        """A message is on disk: queue it for the async workers (unless it
        was already stored by an earlier, idempotent submission)."""
        if result.created:
            self._async_backlog.push(msg, msg.priority, msg.deadline_ms)
            assert self._async_wakeup is not None
            self._async_wakeup.set()
            self.metrics.accepted_async()

    async def handle(
        self,
        msg: AIMessage,
        *,
        async_mode: bool = False,
        validated: bool = False,
    ) -> Acknowledgment:
        """One message through the sync pipeline (:meth:`process_message`)
        or the async one (:meth:`submit`); a rejection becomes a
        ``rejected`` acknowledgment with its code instead of an exception.
        The transports answer every message of a batch or stream this way."""
        try:
            if async_mode:
                return await self.submit(msg, validated=validated)
            return await self.process_message(msg, validated=validated)
        except AiMeshError as e:
            return _error_ack(msg, e)

    async def process_batch(
        self,
        messages: Iterable[AIMessage],
        *,
        async_mode: bool = False,
        tenant_id: str | None = None,
    ) -> list[Acknowledgment]:
        """Process many messages concurrently; each gets an ack, in order (a
        message rejected before delivery gets a ``rejected`` ack with its
        code). ``tenant_id`` puts them all in that tenant; by default each
        keeps its own ``tenant_id``."""
        batch = list(messages)
        if tenant_id is not None:
            for m in batch:
                m.tenant_id = tenant_id
        if async_mode:
            return await self.submit_many(batch)
        return list(await asyncio.gather(*(self.handle(m) for m in batch)))

    async def process_buffer(
        self,
        batch: _native.MessageBuffer,
        *,
        async_mode: bool = False,
        tenant_id: str = "",
    ) -> list[Acknowledgment]:
        """A natively decoded batch (:func:`aimesh._native.decode_batch` or
        :func:`~aimesh._native.decode_frames`). Validation, the route-group
        check and a first routing pass run over the whole batch in one
        native call; messages it refuses are answered at once with their
        code, the others go through the pipeline like :meth:`process_batch`."""
        self._require_started()
        verdict = self.router.route_batch(batch)
        reasons = verdict.reasons
        codes = _native.REJECTION_CODES
        acks: list[Acknowledgment | None] = [None] * len(batch)
        admitted: list[tuple[int, AIMessage]] = []
        for i, view in enumerate(batch):
            reason = reasons[i]
            try:
                msg = AIMessage.from_view(view)
            except AiMeshError as e:  # a field over its size limit
                self.metrics.rejected(e.code)
                acks[i] = Acknowledgment.rejected(view.message_id[:256], e)
                continue
            msg.tenant_id = tenant_id
            # Busy endpoints are not a reason to refuse: the queue waits
            # for capacity. Every other code is final.
            if reason == 0 or codes[reason] == "no_endpoint_available":
                admitted.append((i, msg))
            else:
                self.metrics.rejected(codes[reason])
                acks[i] = _error_ack(msg, _batch_rejection(codes[reason]))
        if async_mode:
            done = await self.submit_many([m for _, m in admitted], validated=True)
        else:
            done = await asyncio.gather(*(self.handle(m, validated=True) for _, m in admitted))
        for (i, _), ack in zip(admitted, done, strict=True):
            acks[i] = ack
        return [a for a in acks if a is not None]

    def route(self, msg: AIMessage) -> RoutingDecision:
        """Dry run: the routing decision for ``msg`` (within its tenant's
        tier); nothing is delivered."""
        self._validate(msg)
        tier = self.tenants.active_tier(msg.tenant_id)
        if tier is not None:
            check_model(tier, msg.group)
        return self.router.route(msg, exclude=self._excluded(msg))

    def _excluded(self, msg: AIMessage) -> list[str]:
        """Endpoints ``msg`` may not use: open circuits, and for a tier
        limited to some route groups, the endpoints of the others."""
        excluded = self.deliverer.open_circuits()
        tier = self.tenants.tier_of(msg.tenant_id) if msg.tenant_id else None
        if tier is not None and tier.allowed_groups:
            excluded = [
                *excluded,
                *(s.endpoint_id for s in self.router.endpoints() if not tier.allows_group(s.group)),
            ]
        return excluded

    def _validate(self, msg: AIMessage) -> None:
        """The protocol rules (``ValidationError`` with the rule's code)."""
        _native.validate_fields(
            msg.agent_id,
            len(msg.payload),
            msg.budget_tokens,
            msg.deadline_ms,
            msg.priority,
            max_payload_bytes=self.config.max_payload_bytes,
        )

    async def get_message(self, message_id: str, *, tenant_id: str = "") -> dict[str, Any]:
        """A message of ``tenant_id`` with its status and ack (another
        tenant's message is not found)."""
        stored = await self.storage.get_message(message_id, tenant_id)
        if stored is None:
            raise NotFoundError("message_not_found", f"no message {message_id!r}")
        return {
            "message_id": message_id,
            "agent_id": stored.message.agent_id,
            "status": stored.status.value,
            "acknowledgment": stored.ack.to_json_dict() if stored.ack else None,
            "created_at_ms": stored.created_at_ms,
            "updated_at_ms": stored.updated_at_ms,
        }

    # -- stages after admission -------------------------------------------------

    async def _run(self, msg: AIMessage, sink: StreamSink | None = None) -> Acknowledgment:
        """dedup (single-flight) -> reserve -> enqueue -> deliver -> settle."""
        loop = asyncio.get_running_loop()
        # The scoped agent makes dedup per tenant: identical payloads of two
        # tenants never share a result.
        key = _native.dedup_key(msg.scoped_agent, msg.payload, msg.dedup_context)
        flight: asyncio.Future[Acknowledgment] = loop.create_future()
        new, existing = self.dedup.insert_if_absent(key, flight)
        if not new:
            original: Acknowledgment = await asyncio.shield(existing)  # type: ignore[arg-type]
            self.metrics.duplicate(msg.tenant_id)
            dup = replace(
                original,
                status=AckStatus.DUPLICATE,
                processing_latency_ms=0.0,
                trace_id=msg.trace_id or original.trace_id,
            )
            log_message(msg.message_id, msg.agent_id, dup)
            return dup
        flight.add_done_callback(_consume_exception)
        try:
            ack = await self._reserve_and_deliver(msg, sink)
        except BaseException as e:
            self.dedup.remove(key)
            if not flight.done():
                if isinstance(e, Exception):
                    flight.set_exception(e)
                else:
                    flight.cancel()
            raise
        if ack.status is AckStatus.SUCCESS:
            done = loop.create_future()
            done.set_result(ack)
            self.dedup.set(key, done)
            self._spawn(self.storage.dedup_put(key, msg.message_id, ack, self.config.dedup_ttl_s))
        else:
            self.dedup.remove(key)  # a failed message may be retried
        flight.set_result(ack)
        return ack

    async def _reserve_and_deliver(
        self, msg: AIMessage, sink: StreamSink | None = None
    ) -> Acknowledgment:
        tokens = msg.estimated_tokens()
        if msg.budget_tokens is not None and tokens > msg.budget_tokens:
            raise BudgetExceededError(
                "message_budget_exceeded",
                f"estimated {tokens} tokens exceed the message's budget_tokens {msg.budget_tokens}",
            )
        t0 = telemetry.now_ns() if telemetry.enabled else 0
        try:
            reservations = await self._reserve(msg, tokens)
        finally:
            if telemetry.enabled:
                telemetry.record(
                    "aimesh.budget.reserve",
                    msg.trace_id,
                    msg.message_id,
                    t0,
                    telemetry.now_ns(),
                    **{"aimesh.tokens": tokens},
                )
        loop = asyncio.get_running_loop()
        job = _Job(msg, reservations, time.perf_counter(), loop.create_future(), sink=sink)
        job.enqueued_ns = telemetry.now_ns() if telemetry.enabled else 0
        try:
            job.seq = self.queue.push(job, msg.priority, msg.deadline_ms)
        except QueueFullError as e:
            await self._settle(reservations, 0)
            self.metrics.rejected("queue_full")
            e.retry_after = QUEUE_RETRY_AFTER_S
            raise
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            # The caller went away: the job still settles its reservation when
            # it finishes (see _deliver_job), so nothing leaks.
            raise

    async def _reserve(self, msg: AIMessage, tokens: int) -> tuple[str, ...]:
        """Reserve ``tokens`` against the tenant's monthly quota, then the
        agent's budget (each check-and-reserve is atomic, so no concurrency
        overspends); answer what to settle. Nothing stays reserved when one
        refuses."""
        held: list[str] = []
        tier = self.tenants.tier_of(msg.tenant_id) if msg.tenant_id else None
        try:
            if tier is not None and tier.tokens_per_month is not None:
                rid = f"{msg.scoped_id}#quota"
                try:
                    resv = await self.budgets.reserve(quota_key(msg.tenant_id), rid, tokens)
                    if not resv.capped:
                        # The quota row is gone (a Redis that lost its data):
                        # made again, never skipped.
                        await self.sync_quota(msg.tenant_id)
                        await self.budgets.reserve(quota_key(msg.tenant_id), rid, tokens)
                except BudgetExceededError as e:
                    self.metrics.rejected("tenant_quota_exceeded")
                    raise BudgetExceededError(
                        "tenant_quota_exceeded",
                        f"the tenant's monthly quota of {tier.tokens_per_month} tokens is used up",
                        details=e.details,
                    ) from None
                held.append(rid)
            # With a local store the agents that have a budget are known
            # here, so the others skip a storage round trip; a shared store
            # may hold budgets set on another node, so it is always asked.
            if self.shared is not None or msg.scoped_agent in self.budget_cache:
                try:
                    resv = await self.budgets.reserve(msg.scoped_agent, msg.scoped_id, tokens)
                except BudgetExceededError:
                    self.metrics.rejected("budget_exceeded")
                    raise
                if resv.capped:
                    held.append(msg.scoped_id)
        except BaseException:
            await self._settle(tuple(held), 0)
            raise
        return tuple(held)

    async def _settle(self, reservations: tuple[str, ...], used: int) -> None:
        """Settle (or release, with 0) reservations; never raises (a
        reservation a crash leaves behind is released by ``recover``)."""
        for rid in reservations:
            try:
                info = await asyncio.shield(self.budgets.settle(rid, used))
            except Exception as e:
                # Stays reserved (never over-admits) until this node's next
                # start releases it; its usage is not counted.
                log.warning("could not settle reservation %s: %s", rid, getattr(e, "code", e))
                continue
            if info is not None:
                self._cache_budget(info)

    async def _dispatch_loop(self) -> None:
        """Pop jobs in priority/deadline order whenever delivery capacity is
        free and run each in its own task."""
        assert self._wakeup is not None
        slots = asyncio.Semaphore(self.config.max_inflight)
        while True:
            await slots.acquire()
            job, expired = self.queue.pop()
            for e in expired:
                self._spawn(self._expire(e))  # type: ignore[arg-type]
            if job is None:
                slots.release()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._active += 1
            task = asyncio.create_task(self._deliver_job(job))  # type: ignore[arg-type]
            self._tasks.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._tasks.discard(t)
                self._active -= 1
                slots.release()

            task.add_done_callback(done)

    async def _expire(self, job: _Job) -> None:
        await self._settle(job.reservations, 0)
        ack = Acknowledgment(
            original_message_id=job.message.message_id,
            status=AckStatus.FAILED,
            error="deadline passed while queued",
            error_code="deadline_exceeded",
            processing_latency_ms=(time.perf_counter() - job.started) * 1000,
            trace_id=job.message.trace_id,
        )
        self.metrics.completed(ack, cost=0.0, tenant=job.message.tenant_id)
        log_message(job.message.message_id, job.message.agent_id, ack)
        if not job.future.done():
            job.future.set_result(ack)

    async def _deliver_job(self, job: _Job) -> None:
        msg = job.message
        ack: Acknowledgment | None = None
        used = 0
        traced = telemetry.enabled and job.enqueued_ns > 0
        t_route = telemetry.now_ns() if traced else 0
        t_deliver = 0
        if traced:
            telemetry.record(
                "aimesh.queue",
                msg.trace_id,
                msg.message_id,
                job.enqueued_ns,
                t_route,
                **{"aimesh.priority": msg.priority},
            )
        try:
            decision = await self._route_when_capacity(msg)
            t_deliver = telemetry.now_ns() if traced else 0
            if traced:
                telemetry.record(
                    "aimesh.route",
                    msg.trace_id,
                    msg.message_id,
                    t_route,
                    t_deliver,
                    **{
                        "aimesh.endpoint": decision.target_endpoint,
                        "aimesh.reason": decision.reason,
                    },
                )
            self.recent_decisions.append(
                RecentDecision(decision, msg.message_id, msg.agent_id, int(time.time() * 1000))
            )
            request = DeliveryRequest(
                payload=msg.payload,
                message_id=msg.message_id,
                trace_id=msg.trace_id,
                metadata=msg.metadata,
                deadline_ms=msg.deadline_ms,
                estimated_tokens=msg.estimated_tokens(),
                sink=job.sink,
            )
            result: DeliveryResult = await self.deliverer.deliver(request, decision)
            used = result.tokens_used
            ack = Acknowledgment(
                original_message_id=msg.message_id,
                status=AckStatus.SUCCESS,
                tokens_used=result.tokens_used,
                processing_latency_ms=(time.perf_counter() - job.started) * 1000,
                endpoint_id=result.endpoint_id,
                result=result.result,
                trace_id=msg.trace_id,
            )
        except AiMeshError as e:
            # A stream cut short has spent tokens upstream: they are charged.
            used = int(e.details.get("tokens_used") or 0)
            ack = Acknowledgment(
                original_message_id=msg.message_id,
                status=AckStatus.FAILED,
                tokens_used=used,
                processing_latency_ms=(time.perf_counter() - job.started) * 1000,
                error=e.message,
                error_code=e.code,
                endpoint_id=str(e.details.get("endpoint_id", "")),
                trace_id=msg.trace_id,
            )
        except Exception:
            # A bug, not an upstream failure: the message still gets a final
            # ack (not "cancelled"), and the error is logged once, here.
            log.exception("delivery of message %s failed", msg.message_id)
            ack = Acknowledgment(
                original_message_id=msg.message_id,
                status=AckStatus.FAILED,
                processing_latency_ms=(time.perf_counter() - job.started) * 1000,
                error="internal error during delivery",
                error_code="internal_error",
                trace_id=msg.trace_id,
            )
        finally:
            t_settle = telemetry.now_ns() if traced else 0
            if traced and ack is not None:
                telemetry.record(
                    "aimesh.deliver",
                    msg.trace_id,
                    msg.message_id,
                    t_deliver or t_route,
                    t_settle,
                    **{
                        "aimesh.endpoint": ack.endpoint_id,
                        "aimesh.status": ack.status.value,
                        "aimesh.tokens": ack.tokens_used,
                    },
                )
            # Settle even on cancellation so a reservation never leaks.
            if job.reservations:
                await self._settle(job.reservations, used)
                if traced:
                    telemetry.record(
                        "aimesh.budget.settle",
                        msg.trace_id,
                        msg.message_id,
                        t_settle,
                        telemetry.now_ns(),
                        **{"aimesh.tokens": used},
                    )
            if ack is None:
                ack = Acknowledgment(
                    original_message_id=msg.message_id,
                    status=AckStatus.FAILED,
                    error="delivery was cancelled",
                    error_code="cancelled",
                    trace_id=msg.trace_id,
                )
            ep = self.endpoints.get(ack.endpoint_id)
            cost = ack.tokens_used / 1000 * ep.cost_per_1k_tokens if ep else 0.0
            self.metrics.completed(ack, cost=cost, tenant=msg.tenant_id)
            log_message(msg.message_id, msg.agent_id, ack)
            if not job.future.done():
                job.future.set_result(ack)

    async def _route_when_capacity(self, msg: AIMessage) -> RoutingDecision:
        """Route; while every eligible endpoint is only *saturated* (not
        unhealthy), wait for a delivery to finish instead of failing, up to
        the message's deadline or the delivery timeout."""
        limit = time.monotonic() + self.config.timeout_s
        if msg.deadline_ms is not None:
            limit = min(limit, time.monotonic() + msg.deadline_ms / 1000 - time.time())
        while True:
            try:
                return self.router.route(msg, exclude=self._excluded(msg))
            except RoutingError:
                remaining = limit - time.monotonic()
                if remaining <= 0 or not self._only_saturated(msg.group):
                    raise
            self._capacity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._capacity.wait(), min(remaining, 1.0))

    def _only_saturated(self, group: str | None) -> bool:
        open_circuits = set(self.deliverer.open_circuits())
        return any(
            s.current_load >= s.capacity
            for s in self.router.endpoints()
            if (group is None or s.group == group)
            and s.health != "unhealthy"
            and s.endpoint_id not in open_circuits
        )

    async def _async_worker(self) -> None:
        """Deliver durable (async-mode) messages in priority order and write
        their final acks."""
        assert self._async_wakeup is not None
        while True:
            msg, expired = self._async_backlog.pop()
            for m in expired:
                await self._finish_async(m, _expired_ack(m))  # type: ignore[arg-type]
            if msg is None:
                self._async_wakeup.clear()
                await self._async_wakeup.wait()
                continue
            assert isinstance(msg, AIMessage)
            try:
                ack = await self._run(msg)
            except AiMeshError as e:
                ack = _error_ack(msg, e)
                ack.status = AckStatus.FAILED
            await self._finish_async(msg, ack)

    async def _finish_async(self, msg: AIMessage, ack: Acknowledgment) -> None:
        for attempt in range(5):
            try:
                await self.storage.complete_message(msg.message_id, ack, msg.tenant_id)
                return
            except ServiceUnavailableError:
                await asyncio.sleep(0.2 * (attempt + 1))
        log.error("could not record the ack of %s; it stays pending", msg.message_id)

    async def _record_sync(self, msg: AIMessage, ack: Acknowledgment) -> None:
        """Keep sync-mode messages queryable by id (not on the answer path)."""
        with contextlib.suppress(AiMeshError):
            await self.storage.put_message(msg, body_hash(msg), status=ack.status, ack=ack)

    # -- helpers ----------------------------------------------------------------

    def _require_started(self) -> None:
        if not self._started:
            raise ServiceUnavailableError("not_started", "call `await mesh.start()` first")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def ready(self) -> bool:
        return self._started and not self._draining


def _own(info: BudgetInfo) -> BudgetInfo:
    """A budget as its tenant names it (without the tenant scope)."""
    return replace(info, agent_id=unscoped(info.agent_id))


def _node_id(cfg: AiMeshConfig) -> str:
    """This node's name in shared state (its reservations are its own)."""
    import socket

    return f"{socket.gethostname()}:{cfg.bind_addr}:{Path(cfg.data_dir).resolve()}"


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    # A single-flight future may fail with nobody waiting on it.
    if not fut.cancelled():
        fut.exception()


def _ceil_retry(seconds: float) -> float:
    return max(0.001, round(seconds, 3))


def _error_ack(msg: AIMessage, e: AiMeshError) -> Acknowledgment:
    return Acknowledgment.rejected(msg.message_id, e, msg.trace_id)


def _received_ack(msg: AIMessage) -> Acknowledgment:
    return Acknowledgment(
        original_message_id=msg.message_id, status=AckStatus.RECEIVED, trace_id=msg.trace_id
    )


def _batch_rejection(code: str) -> AiMeshError:
    if code == "unknown_group":
        return NotFoundError(code, "no endpoints serve the message's model")
    return ValidationError(code, f"message refused: {code.replace('_', ' ')}")


def _expired_ack(msg: AIMessage) -> Acknowledgment:
    return Acknowledgment(
        original_message_id=msg.message_id,
        status=AckStatus.FAILED,
        error="deadline passed before delivery",
        error_code="deadline_exceeded",
        trace_id=msg.trace_id,
    )
