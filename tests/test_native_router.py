"""The scoring router through the public API (aimesh.Router / _native.Router),
with hypothesis properties."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimesh import AIMessage, EndpointMetrics, HealthStatus, Router, _native
from aimesh.errors import FrameError, NotFoundError, RoutingError, ValidationError


def frames(messages: list[AIMessage]) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in (m.to_protobuf() for m in messages))


def test_hand_computed_literal_and_normalized_scores():
    literal = Router(normalize=False)
    for r in (literal,):
        r.register_endpoint(
            EndpointMetrics(
                "a", capacity=100, current_load=50, cost_per_1k_tokens=30, latency_p99_ms=500
            )
        )
        r.register_endpoint(
            EndpointMetrics("b", capacity=100, cost_per_1k_tokens=10, latency_p99_ms=800)
        )
    d = literal.route()
    assert d.target_endpoint == "a"
    s = d.score_breakdown
    assert (s.cost_score, s.load_score, s.latency_score) == pytest.approx((12, 15, 150))
    assert s.total_score == pytest.approx(177)
    assert d.fallback_endpoints == ["b"]
    assert d.fallback_scores[0].total_score == pytest.approx(244)
    norm = Router()
    norm.native.upsert_endpoint(
        "a", capacity=100, current_load=50, cost_per_1k_tokens=30, latency_p99_ms=500
    )
    norm.native.upsert_endpoint("b", capacity=100, cost_per_1k_tokens=10, latency_p99_ms=800)
    d = norm.route()
    assert d.target_endpoint == "b"
    assert d.score_breakdown.total_score == pytest.approx(0.4 / 3 + 0.3)
    assert "lowest score" in d.reason
    assert d.candidates == 2


def test_groups_health_saturation_and_errors():
    r = Router()
    r.register_endpoint(EndpointMetrics("s1", group="small", cost_per_1k_tokens=1))
    r.register_endpoint(
        EndpointMetrics("s2", group="small", cost_per_1k_tokens=2, health_status="DEGRADED")
    )
    r.register_endpoint(EndpointMetrics("l1", group="large", cost_per_1k_tokens=9, capacity=1))
    assert r.route(AIMessage("a", b"x", metadata={"model": "small"})).target_endpoint == "s1"
    assert r.route(group="large").target_endpoint == "l1"
    with pytest.raises(NotFoundError) as e:
        r.route(group="nope")
    assert e.value.code == "unknown_group"
    r.native.record_start("l1")  # now saturated
    with pytest.raises(RoutingError) as e:
        r.route(group="large")
    assert e.value.code == "no_endpoint_available" and "saturated" in e.value.message
    r.native.set_health("s1", "Unhealthy")
    assert r.route(group="small").target_endpoint == "s2"
    with pytest.raises(RoutingError):
        r.route(group="small", exclude=["s2"])
    with pytest.raises(ValidationError) as e:
        r.native.set_health("s1", "great")
    assert e.value.code == "invalid_health_status"
    with pytest.raises(NotFoundError):
        r.native.set_health("missing", "healthy")
    assert sorted(r.groups()) == ["large", "small"]
    assert r.remove_endpoint("l1") and not r.remove_endpoint("l1")


def test_live_measurements():
    r = Router()
    r.register_endpoint(EndpointMetrics("e", capacity=10, latency_p99_ms=100, error_rate=0.5))
    r.native.record_start("e")
    assert r.endpoint("e").current_load == 1
    r.native.record_finish("e", 40.0, True)
    s = r.endpoint("e")
    assert (s.current_load, s.requests, s.failures) == (0, 1, 0)
    assert s.latency_p99_ms == 40.0
    assert s.error_rate == pytest.approx(0.5 * 0.95)
    for _ in range(600):
        r.native.record_finish("e", 5.0, False)
    s = r.endpoint("e")
    assert s.latency_p99_ms == 5.0 and s.error_rate > 0.99 and s.current_load == 0


endpoint_st = st.builds(
    dict,
    capacity=st.integers(1, 50),
    current_load=st.integers(0, 60),
    cost=st.floats(0, 100, allow_nan=False),
    latency=st.floats(0, 5000, allow_nan=False),
    health=st.sampled_from(["healthy", "degraded", "unhealthy"]),
)


def _score(w, eps, normalize):
    keys = ("cost", "load", "latency")
    raw = {
        i: {
            "cost": e["cost"],
            "load": min(e["current_load"], 10**9) / e["capacity"] * 100,
            "latency": e["latency"],
        }
        for i, e in eps.items()
    }
    mx = {k: max(v[k] for v in raw.values()) for k in keys}
    out = {}
    for i, v in raw.items():
        total = 0.0
        for k, wk in zip(keys, w, strict=True):
            x = v[k]
            total += wk * (x / mx[k] if mx[k] > 0 else 0.0) if normalize else wk * x
        out[i] = total
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(endpoint_st, min_size=1, max_size=8),
    st.booleans(),
    st.tuples(*[st.floats(0, 1, allow_nan=False)] * 3),
)
def test_winner_has_minimum_score_and_is_never_ineligible(eps, normalize, w):
    r = _native.Router(*w, normalize=normalize)
    for i, e in enumerate(eps):
        r.upsert_endpoint(
            f"e{i}",
            capacity=e["capacity"],
            current_load=e["current_load"],
            cost_per_1k_tokens=e["cost"],
            latency_p99_ms=e["latency"],
            health=e["health"],
        )
    eligible = {
        f"e{i}": e
        for i, e in enumerate(eps)
        if e["health"] != "unhealthy" and e["current_load"] < e["capacity"]
    }
    if not eligible:
        with pytest.raises(RoutingError):
            r.route()
        return
    d = r.route()
    assert d.target_endpoint in eligible
    expected = _score(w, eligible, normalize)
    best = min(expected.values())
    assert d.score_breakdown.total_score == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert expected[d.target_endpoint] == pytest.approx(best, rel=1e-9, abs=1e-9)
    chain = [d.target_endpoint, *d.fallback_endpoints]
    assert sorted(chain) == sorted(eligible)
    totals = [d.score_breakdown.total_score] + [s.total_score for s in d.fallback_scores]
    assert totals == sorted(totals)


@settings(max_examples=100, deadline=None)
@given(st.lists(endpoint_st, min_size=1, max_size=6), st.integers(1, 200))
def test_batch_never_overfills_and_agrees_with_route(eps, n):
    r = _native.Router()
    for i, e in enumerate(eps):
        r.upsert_endpoint(
            f"e{i}",
            capacity=e["capacity"],
            current_load=e["current_load"],
            cost_per_1k_tokens=e["cost"],
            latency_p99_ms=e["latency"],
            health=e["health"],
        )
    msg = AIMessage("agent", b"payload")
    one = r.route_batch(frames([msg]))
    try:
        assert one.endpoint_ids[one.indices[0]] == r.route().target_endpoint
    except RoutingError:
        assert one.indices[0] == -1 and one.rejections == {"no_endpoint_available": 1}
    res = r.route_batch(frames([msg] * n))
    assert res.count == n and len(res.indices) == n and len(res.reasons) == n
    assert res.indices.format == "i" and res.reasons.format == "B"
    counts: dict[int, int] = {}
    for i in res.indices:
        if i >= 0:
            counts[i] = counts.get(i, 0) + 1
    for i, c in counts.items():
        e = eps[int(res.endpoint_ids[i][1:])]
        assert e["health"] != "unhealthy"
        assert c <= e["capacity"] - e["current_load"]
    assert res.routed == sum(counts.values())
    assert res.routed + sum(res.rejections.values()) == n


def test_batch_rejections_by_code_and_commit_load():
    r = _native.Router()
    r.upsert_endpoint("g1", group="g", capacity=3)
    batch = [
        AIMessage("ok", b"x", metadata={"model": "g"}),
        AIMessage("BAD", b"x"),
        AIMessage("ok", b""),
        AIMessage("ok", b"x", priority=200),
        AIMessage("ok", b"x", budget_tokens=0),
        AIMessage("ok", b"x", deadline_ms=1),
        AIMessage("ok", b"x", metadata={"model": "other"}),
    ]
    data = frames(batch) + struct.pack(">I", 3) + b"\xff\xff\xff"
    res = r.route_batch(data, commit_load=True)
    assert res.routed == 1
    assert res.rejections == {
        "invalid_agent_id": 1,
        "payload_required": 1,
        "invalid_priority": 1,
        "invalid_budget_tokens": 1,
        "deadline_in_past": 1,
        "unknown_group": 1,
        "invalid_protobuf": 1,
    }
    codes = [_native.REJECTION_CODES[c] for c in res.reasons]
    assert codes[0] == "routed"
    assert r.endpoint("g1").current_load == 1
    with pytest.raises(FrameError):
        r.route_batch(b"\x00\x00\x00\x09abc")


def test_embedded_example():
    from aimesh import AiMesh, AiMeshConfig

    mesh = AiMesh(AiMeshConfig())
    mesh.router.register_endpoint(
        EndpointMetrics(
            endpoint_id="gpt-4",
            capacity=1000,
            current_load=0,
            cost_per_1k_tokens=30.0,
            latency_p99_ms=500.0,
            error_rate=0.01,
            health_status=HealthStatus.HEALTHY,
        )
    )
    d = mesh.router.route(AIMessage(agent_id="my-agent", payload=b"hi", estimated_cost_tokens=100))
    assert d.target_endpoint == "gpt-4" and d.fallback_endpoints == []
