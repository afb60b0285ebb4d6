"""The delivery engine: one pooled HTTP client, per-endpoint concurrency
limits, retries with backoff, the fallback chain and circuit breakers.
Every attempt's load, latency and outcome is fed back to the router.

The upstream client is aiohttp: measured against the bundled simulator at 32
concurrent requests on this project's reference machine, httpx's
AsyncClient reached 360 requests/s and aiohttp 7,450 (the SDK keeps httpx,
where its sync+async API matters more than raw throughput)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aiohttp

from aimesh import _native
from aimesh.endpoints.adapters import ADAPTERS, OpenAIAdapter, chat_url
from aimesh.endpoints.base import ClientGone, DeliveryRequest, DeliveryResult, EndpointFailure
from aimesh.endpoints.breaker import CircuitBreaker
from aimesh.errors import UpstreamError
from aimesh.models import EndpointMetrics

log = logging.getLogger("aimesh.delivery")

#: Longest wait between two attempts, whatever Retry-After says.
MAX_BACKOFF_S = 2.0


class Decision(Protocol):
    @property
    def target_endpoint(self) -> str: ...
    @property
    def fallback_endpoints(self) -> list[str]: ...


class Deliverer:
    """Delivers requests along a routing decision's chain."""

    def __init__(
        self,
        router: _native.Router,
        *,
        timeout_s: float = 30.0,
        max_attempts_per_endpoint: int = 2,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 5.0,
        backoff_base_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        self.router = router
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts_per_endpoint)
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_s = breaker_cooldown_s
        self.backoff_base_s = backoff_base_s
        self.clock = clock
        self._client = client
        self.endpoints: dict[str, EndpointMetrics] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.histograms: dict[str, _native.LatencyHistogram] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._health_task: asyncio.Task[None] | None = None
        #: Called after every attempt (capacity was freed).
        self.on_release: Callable[[], None] = lambda: None

    @property
    def client(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop; one pool for all endpoints.
        # No global connection cap: per-endpoint semaphores bound concurrency.
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                trust_env=False,
                auto_decompress=True,
            )
        return self._client

    # -- registry ---------------------------------------------------------------

    def add_endpoint(self, endpoint: EndpointMetrics) -> None:
        eid = endpoint.endpoint_id
        old = self.endpoints.get(eid)
        self.endpoints[eid] = endpoint
        if old is None or old.capacity != endpoint.capacity:
            self._slots[eid] = asyncio.Semaphore(endpoint.capacity)
        self.breakers.setdefault(
            eid, CircuitBreaker(self.breaker_failures, self.breaker_cooldown_s, self.clock)
        )
        self.histograms.setdefault(eid, _native.LatencyHistogram())

    def remove_endpoint(self, endpoint_id: str) -> None:
        self.endpoints.pop(endpoint_id, None)
        self.breakers.pop(endpoint_id, None)
        self.histograms.pop(endpoint_id, None)
        self._slots.pop(endpoint_id, None)

    def get(self, endpoint_id: str) -> EndpointMetrics | None:
        return self.endpoints.get(endpoint_id)

    def open_circuits(self) -> list[str]:
        """Endpoints whose breaker refuses traffic now; the Mesh passes them
        to the router as ``exclude``, so an open breaker counts as
        unhealthy in routing."""
        return [eid for eid, b in self.breakers.items() if b.refuses()]

    # -- delivery ---------------------------------------------------------------

    async def deliver(self, request: DeliveryRequest, decision: Decision) -> DeliveryResult:
        """Try the target, then each fallback; raise :class:`UpstreamError`
        when all fail (``upstream_failed``), when an upstream rejects the
        request (``upstream_rejected``) or when the deadline passes
        (``deadline_exceeded``)."""
        chain: Sequence[str] = [decision.target_endpoint, *decision.fallback_endpoints]
        attempts: list[dict[str, Any]] = []
        for position, eid in enumerate(chain):
            endpoint = self.endpoints.get(eid)
            breaker = self.breakers.get(eid)
            if endpoint is None or breaker is None:
                continue
            for attempt in range(self.max_attempts):
                if not breaker.allow():
                    attempts.append({"endpoint_id": eid, "error": "circuit_open"})
                    break
                timeout = self._timeout(request, attempts)
                try:
                    result, tokens, latency = await self._attempt(endpoint, request, timeout)
                except EndpointFailure as f:
                    attempts.append(
                        {
                            "endpoint_id": eid,
                            "error": f.code,
                            "status": f.status,
                            "message": f.message,
                        }
                    )
                    if not f.retryable:
                        # A bad request, a missing key, or a stream already
                        # under way: no other endpoint can help.
                        breaker.release()
                        raise UpstreamError(
                            f.code,
                            f.message,
                            details={
                                "endpoint_id": eid,
                                "attempts": attempts,
                                "tokens_used": f.tokens_used,
                            },
                        ) from None
                    breaker.failure()
                    if attempt + 1 < self.max_attempts and breaker.state == breaker.CLOSED:
                        await asyncio.sleep(self._backoff(attempt, f.retry_after, request))
                    continue
                except BaseException:
                    breaker.release()
                    raise
                breaker.success()
                self.histograms[eid].record(latency)
                return DeliveryResult(
                    result=result,
                    tokens_used=tokens,
                    latency_ms=latency,
                    endpoint_id=eid,
                    attempts=len(attempts) + 1,
                    fallbacks_used=position,
                )
        raise UpstreamError(
            "upstream_failed",
            f"all {len(chain)} endpoint(s) of the chain failed ({len(attempts)} attempts)",
            details={"attempts": attempts},
        )

    async def _attempt(
        self, endpoint: EndpointMetrics, request: DeliveryRequest, timeout: float
    ) -> tuple[bytes, int, float]:
        eid = endpoint.endpoint_id
        adapter = ADAPTERS[endpoint.kind]
        slot = self._slots[eid]
        async with slot:  # never more than `capacity` in flight upstream
            self.router.record_start(eid)
            t0 = time.perf_counter()
            ok = False
            try:
                if request.sink is not None and isinstance(adapter, OpenAIAdapter):
                    result, tokens = await adapter.stream(
                        self.client, endpoint, request, timeout, request.sink
                    )
                else:
                    result, tokens = await adapter.call(self.client, endpoint, request, timeout)
                    if request.sink is not None:  # not a streaming upstream: one piece
                        try:
                            await request.sink(result)
                        except ClientGone:
                            raise EndpointFailure(
                                "client_disconnected",
                                "the client went away",
                                retryable=False,
                                tokens_used=tokens,
                            ) from None
                ok = True
                return result, tokens, (time.perf_counter() - t0) * 1000
            finally:
                self.router.record_finish(eid, (time.perf_counter() - t0) * 1000, ok)
                self.on_release()

    def _timeout(self, request: DeliveryRequest, attempts: list[dict[str, Any]]) -> float:
        if request.deadline_ms is None:
            return self.timeout_s
        remaining = request.deadline_ms / 1000 - time.time()
        if remaining <= 0:
            raise UpstreamError(
                "deadline_exceeded",
                "the message's deadline passed before it could be delivered",
                details={"attempts": attempts},
            )
        return min(self.timeout_s, remaining)

    def _backoff(self, attempt: int, retry_after: float | None, request: DeliveryRequest) -> float:
        delay: float = self.backoff_base_s * (2**attempt) * (1 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if request.deadline_ms is not None:
            delay = min(delay, max(0.0, request.deadline_ms / 1000 - time.time()))
        return min(delay, MAX_BACKOFF_S)

    # -- health checks ------------------------------------------------------------

    def start_health_checks(self, interval_s: float) -> None:
        """Probe every endpoint every ``interval_s`` and mark it healthy or
        unhealthy in the router."""
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(interval_s))

    async def check_health(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for eid, ep in list(self.endpoints.items()):
            url = chat_url(ep.url).removesuffix("/chat/completions") + "/models"
            if ep.kind != "openai":
                url = ep.url.rstrip("/") + "/health"
            try:
                timeout = aiohttp.ClientTimeout(total=min(5.0, self.timeout_s))
                async with self.client.get(url, timeout=timeout) as r:
                    ok = r.status < 500
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            results[eid] = ok
            with contextlib.suppress(Exception):
                self.router.set_health(eid, ep.health_status.value if ok else "unhealthy")
        return results

    async def _health_loop(self, interval_s: float) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(interval_s)

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._client is not None:
            await self._client.close()
            self._client = None
