"""The Python face of the native scoring router.

``Router`` takes and returns protocol models; the scoring, filtering, live
measurements and the batch path run in ``aimesh._native``.
"""

from __future__ import annotations

from collections.abc import Sequence

from aimesh import _native
from aimesh.models import AIMessage, EndpointMetrics

RoutingDecision = _native.RoutingDecision
RoutingScore = _native.RoutingScore
EndpointState = _native.EndpointState
BatchRouteResult = _native.BatchRouteResult


class Router:
    """Cost-aware router: the lowest ``w_cost*cost + w_load*load +
    w_latency*latency`` among healthy, unsaturated endpoints wins."""

    def __init__(
        self,
        w_cost: float = 0.4,
        w_load: float = 0.3,
        w_latency: float = 0.3,
        normalize: bool = True,
    ) -> None:
        self.native = _native.Router(w_cost, w_load, w_latency, normalize)

    def register_endpoint(self, endpoint: EndpointMetrics) -> None:
        """Add or replace an endpoint; its latency and error rate are priors
        until real deliveries are measured."""
        self.native.upsert_endpoint(
            endpoint.endpoint_id,
            group=endpoint.group,
            capacity=endpoint.capacity,
            current_load=endpoint.current_load,
            cost_per_1k_tokens=endpoint.cost_per_1k_tokens,
            latency_p99_ms=endpoint.latency_p99_ms,
            error_rate=endpoint.error_rate,
            health=endpoint.health_status.value,
        )

    def remove_endpoint(self, endpoint_id: str) -> bool:
        return self.native.remove_endpoint(endpoint_id)

    def route(
        self,
        message: AIMessage | None = None,
        *,
        group: str | None = None,
        exclude: Sequence[str] = (),
    ) -> RoutingDecision:
        """Pick the endpoint for ``message`` (within its ``metadata["model"]``
        group if set) or for ``group``; raise ``NotFoundError`` for an
        unknown group and ``RoutingError`` when nothing is eligible."""
        if message is not None and group is None:
            group = message.group
        return self.native.route(group, exclude)

    def route_batch(
        self, frames: bytes | _native.MessageBuffer, *, commit_load: bool = False
    ) -> BatchRouteResult:
        """Decode, validate and route a buffer of length-prefixed AIMessage
        frames in one native call (GIL released)."""
        return self.native.route_batch(frames, commit_load=commit_load)

    def endpoints(self) -> list[EndpointState]:
        return self.native.endpoints()

    def endpoint(self, endpoint_id: str) -> EndpointState | None:
        return self.native.endpoint(endpoint_id)

    def groups(self) -> list[str]:
        return self.native.groups()


def decision_to_json(decision: RoutingDecision, message_id: str = "") -> dict[str, object]:
    """JSON form of a routing decision (the RoutingDecision message)."""

    def score(s: RoutingScore) -> dict[str, float]:
        return {
            "cost_score": s.cost_score,
            "load_score": s.load_score,
            "latency_score": s.latency_score,
            "total_score": s.total_score,
        }

    return {
        "message_id": message_id,
        "target_endpoint": decision.target_endpoint,
        "score_breakdown": score(decision.score_breakdown),
        "fallback_endpoints": list(decision.fallback_endpoints),
        "fallback_scores": [score(s) for s in decision.fallback_scores],
        "reason": decision.reason,
        "group": decision.group,
        "candidates": decision.candidates,
    }
