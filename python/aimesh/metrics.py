"""Counters, histograms and gauges of a Mesh: ``/stats`` (JSON, native
histograms) and ``/metrics`` (Prometheus text, prometheus-client)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aimesh import _native
from aimesh.models import Acknowledgment

if TYPE_CHECKING:
    from aimesh.mesh import AiMesh

#: The Prometheus ``tenant`` label of the default tenant (tenant ids start
#: with a letter or digit, so none is named this).
DEFAULT_TENANT_LABEL = "_default"


def tenant_label(tenant_id: str) -> str:
    return tenant_id or DEFAULT_TENANT_LABEL


@dataclass(slots=True)
class TenantUsage:
    """What one tenant has used since the gateway started."""

    messages: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    cost: float = 0.0
    by_endpoint: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "messages_total": sum(self.messages.values()),
            "tokens_used": self.tokens,
            "cost": round(self.cost, 6),
            "by_endpoint": {
                ep: {
                    "messages": int(v["messages"]),
                    "tokens": int(v["tokens"]),
                    "cost": round(v["cost"], 6),
                }
                for ep, v in sorted(self.by_endpoint.items())
            },
        }


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class MeshMetrics:
    """All measurements of one Mesh, with its own Prometheus registry."""

    def __init__(self, mesh: AiMesh) -> None:
        self.mesh = mesh
        self.started_at = time.time()
        self.registry = CollectorRegistry()
        self.messages = PromCounter(
            "aimesh_messages",
            "Messages completed, by final status, endpoint and tenant.",
            ["status", "endpoint", "tenant"],
            registry=self.registry,
        )
        self.tokens = PromCounter(
            "aimesh_tokens",
            "Tokens used, by endpoint and tenant.",
            ["endpoint", "tenant"],
            registry=self.registry,
        )
        self.cost = PromCounter(
            "aimesh_cost",
            "Cost in the endpoints' cost units (tokens/1000 * cost_per_1k_tokens), by tenant.",
            ["endpoint", "tenant"],
            registry=self.registry,
        )
        self.rejections = PromCounter(
            "aimesh_rejections",
            "Messages refused before delivery, by code.",
            ["code"],
            registry=self.registry,
        )
        self.latency = PromHistogram(
            "aimesh_processing_latency_seconds",
            "End-to-end processing latency of delivered messages.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(mesh))
        self.overall = _native.LatencyHistogram()
        self.by_status: Counter[str] = Counter()
        self.rejected_by_code: Counter[str] = Counter()
        self.tokens_total = 0
        self.cost_total = 0.0
        self.async_accepted = 0
        self.duplicates = 0
        #: Usage per tenant ("" is the default tenant).
        self.tenants: defaultdict[str, TenantUsage] = defaultdict(TenantUsage)

    def completed(self, ack: Acknowledgment, *, cost: float, tenant: str = "") -> None:
        endpoint = ack.endpoint_id or "none"
        status = ack.status.value
        label = tenant_label(tenant)
        self.by_status[status] += 1
        self.messages.labels(status, endpoint, label).inc()
        usage = self.tenants[tenant]
        usage.messages[status] += 1
        if ack.endpoint_id:
            per = usage.by_endpoint.setdefault(
                endpoint, {"messages": 0.0, "tokens": 0.0, "cost": 0.0}
            )
            per["messages"] += 1
            per["tokens"] += ack.tokens_used
            per["cost"] += cost
        if ack.tokens_used:
            self.tokens.labels(endpoint, label).inc(ack.tokens_used)
            self.tokens_total += ack.tokens_used
            usage.tokens += ack.tokens_used
        if cost:
            self.cost.labels(endpoint, label).inc(cost)
            self.cost_total += cost
            usage.cost += cost
        if ack.processing_latency_ms:
            self.overall.record(ack.processing_latency_ms)
            self.latency.labels(endpoint).observe(ack.processing_latency_ms / 1000)

    def rejected(self, code: str) -> None:
        self.rejected_by_code[code] += 1
        self.rejections.labels(code).inc()

    def duplicate(self, tenant: str = "") -> None:
        self.duplicates += 1
        self.by_status["duplicate"] += 1
        self.tenants[tenant].messages["duplicate"] += 1
        self.messages.labels("duplicate", "none", tenant_label(tenant)).inc()

    def accepted_async(self) -> None:
        self.async_accepted += 1

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def stats(self) -> dict[str, Any]:
        """Counts, tokens, cost and latency percentiles (overall and per
        endpoint, from the native histograms)."""
        mesh = self.mesh
        endpoints: dict[str, Any] = {}
        for state in mesh.router.endpoints():
            hist = mesh.deliverer.histograms.get(state.endpoint_id)
            snap = hist.snapshot() if hist is not None else {}
            endpoints[state.endpoint_id] = {
                "group": state.group,
                "health_status": state.health,
                "current_load": state.current_load,
                "capacity": state.capacity,
                "requests": state.requests,
                "failures": state.failures,
                "error_rate": round(state.error_rate, 6),
                "latency_p99_ms_live": round(state.latency_p99_ms, 3),
                "latency_ms": _round(snap),
            }
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "messages": dict(self.by_status),
            "messages_total": sum(self.by_status.values()),
            "async_accepted": self.async_accepted,
            "rejections": dict(self.rejected_by_code),
            "tokens_used": self.tokens_total,
            "cost": round(self.cost_total, 6),
            "queue_depth": len(mesh.queue),
            "latency_ms": _round(self.overall.snapshot()),
            "endpoints": endpoints,
            "tenants": {tenant_label(t): u.to_json_dict() for t, u in sorted(self.tenants.items())},
        }

    def tenant_stats(self, tenant: str) -> dict[str, Any]:
        """One tenant's usage (what a tenant key sees of ``/stats``)."""
        usage = self.tenants.get(tenant) or TenantUsage()
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "tenant_id": tenant,
            **usage.to_json_dict(),
        }


def _round(snap: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in snap.items()}


class _LiveCollector(Collector):
    """Gauges read at scrape time from the router and the queue."""

    def __init__(self, mesh: AiMesh) -> None:
        self.mesh = mesh

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mesh = self.mesh
        depth = GaugeMetricFamily("aimesh_queue_depth", "Messages waiting for delivery.")
        depth.add_metric([], len(mesh.queue))
        yield depth
        load = GaugeMetricFamily(
            "aimesh_endpoint_load", "In-flight deliveries.", labels=["endpoint"]
        )
        p99 = GaugeMetricFamily(
            "aimesh_endpoint_latency_p99_seconds", "Live P99 latency.", labels=["endpoint"]
        )
        err = GaugeMetricFamily(
            "aimesh_endpoint_error_rate", "Live error rate.", labels=["endpoint"]
        )
        up = GaugeMetricFamily(
            "aimesh_endpoint_healthy", "1 if the endpoint is routable.", labels=["endpoint"]
        )
        open_circuits = set(mesh.deliverer.open_circuits())
        for s in mesh.router.endpoints():
            load.add_metric([s.endpoint_id], s.current_load)
            p99.add_metric([s.endpoint_id], s.latency_p99_ms / 1000)
            err.add_metric([s.endpoint_id], s.error_rate)
            routable = s.health != "unhealthy" and s.endpoint_id not in open_circuits
            up.add_metric([s.endpoint_id], 1.0 if routable else 0.0)
        yield load
        yield p99
        yield err
        yield up
        budgets = mesh.metrics_budgets()
        remaining = GaugeMetricFamily(
            "aimesh_budget_remaining_tokens",
            "Remaining budget per agent.",
            labels=["agent", "tenant"],
        )
        reserved = GaugeMetricFamily(
            "aimesh_budget_reserved_tokens",
            "Tokens reserved by in-flight messages.",
            labels=["agent", "tenant"],
        )
        for tenant, b in budgets:
            remaining.add_metric([b.agent_id, tenant_label(tenant)], b.remaining_tokens)
            reserved.add_metric([b.agent_id, tenant_label(tenant)], b.reserved_tokens)
        yield remaining
        yield reserved
