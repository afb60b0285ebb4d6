"""The checks a tenant's tier puts on each of its messages: payload size,
priority, route groups, number of agents, request rate and concurrency.
All are in memory (no I/O), so they run inside ``Mesh.admit``."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from aimesh import _native
from aimesh.errors import PermissionDeniedError, RateLimitError, ValidationError
from aimesh.models import AIMessage
from aimesh.tenancy.tiers import Tier

#: The sliding window of ``requests_per_minute``.
WINDOW_S = 60.0


class TierAdmission:
    """Per-tenant limits of a tier. ``on_new_agent(tenant, agent)`` is told
    of every agent a tenant uses for the first time (to persist it)."""

    def __init__(self, on_new_agent: Callable[[str, str], None] | None = None) -> None:
        self.agents: dict[str, set[str]] = defaultdict(set)
        self.inflight: Counter[str] = Counter()
        self.on_new_agent = on_new_agent
        # One bucket and one window per tier, keyed by tenant inside it.
        self._limiters: dict[Tier, tuple[_native.TokenBucket, _native.SlidingWindow]] = {}

    def check(self, msg: AIMessage, tier: Tier) -> None:
        """Everything but the rate (see :meth:`acquire`); raise the error
        the tier's limit maps to."""
        if len(msg.payload) > tier.max_payload_bytes:
            # 400, like the gateway's own payload limit (a message rule).
            raise ValidationError(
                "payload_too_large",
                f"the {tier.name} tier allows payloads of at most {tier.max_payload_bytes} bytes",
            )
        if msg.priority > tier.max_priority:
            raise PermissionDeniedError(
                "priority_not_allowed",
                f"the {tier.name} tier allows priority up to {tier.max_priority}",
            )
        check_model(tier, msg.group)
        agents = self.agents[msg.tenant_id]
        if msg.agent_id not in agents:
            if tier.max_agents is not None and len(agents) >= tier.max_agents:
                raise PermissionDeniedError(
                    "max_agents_reached",
                    f"the {tier.name} tier allows {tier.max_agents} agents per tenant",
                )
            agents.add(msg.agent_id)
            if self.on_new_agent is not None:
                self.on_new_agent(msg.tenant_id, msg.agent_id)

    def acquire(self, tenant_id: str, tier: Tier) -> None:
        """The tier's request rate (token bucket, then the one-minute
        sliding window); ``RateLimitError`` with Retry-After."""
        limiters = self._limiters.get(tier)
        if limiters is None:
            limiters = (
                _native.TokenBucket(tier.requests_per_second, tier.burst),
                _native.SlidingWindow(tier.requests_per_minute, WINDOW_S),
            )
            self._limiters[tier] = limiters
        for limiter in limiters:
            allowed, retry_after = limiter.try_acquire(tenant_id)
            if not allowed:
                raise tenant_rate_limited(tier, retry_after)

    def begin(self, tenant_id: str, tier: Tier) -> None:
        """A message of the tenant starts delivery (``end`` when it is done)."""
        if self.inflight[tenant_id] >= tier.max_concurrent:
            raise RateLimitError(
                "concurrency_limit",
                f"the {tier.name} tier allows {tier.max_concurrent} messages in delivery at once",
                retry_after=1,
            )
        self.inflight[tenant_id] += 1

    def end(self, tenant_id: str) -> None:
        self.inflight[tenant_id] -= 1
        if self.inflight[tenant_id] <= 0:
            del self.inflight[tenant_id]


def check_model(tier: Tier, group: str | None) -> None:
    """A message naming a model its tier does not include is refused (one
    without a model is routed among the tier's models instead)."""
    if group is not None and not tier.allows_group(group):
        raise PermissionDeniedError(
            "model_not_allowed", f"the {tier.name} tier does not include model {group!r}"
        )


def tenant_rate_limited(tier: Tier, retry_after: float) -> RateLimitError:
    return RateLimitError(
        "tenant_rate_limited",
        f"the {tier.name} tier allows {tier.requests_per_second:g} requests/s "
        f"and {tier.requests_per_minute} a minute",
        retry_after=max(0.001, round(retry_after, 3)),
    )
