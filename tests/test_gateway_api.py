"""Validation codes, content types, batches, endpoints API, admin guard and
metrics through the HTTP API of a real gateway process."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aimesh.models import AIMessage
from aimesh.proto import aimesh_pb2 as pb2
from aimesh.server import protobuf as pb
from tests.conftest import openai_endpoint

FUTURE_MS = int(time.time() * 1000) + 3_600_000

INVALID = [
    ({"agent_id": "Bad-Agent", "payload_text": "x"}, 400, "invalid_agent_id"),
    ({"agent_id": "", "payload_text": "x"}, 400, "invalid_agent_id"),
    ({"agent_id": "a b", "payload_text": "x"}, 400, "invalid_agent_id"),
    ({"payload_text": "x"}, 400, "invalid_agent_id"),
    ({"agent_id": "a"}, 400, "payload_required"),
    ({"agent_id": "a", "payload_text": ""}, 400, "payload_required"),
    ({"agent_id": "a", "payload": "zz"}, 400, "invalid_payload"),
    ({"agent_id": "a", "payload": "00" * (1024 * 1024 + 1)}, 400, "payload_too_large"),
    ({"agent_id": "a", "payload_text": "x", "budget_tokens": 0}, 400, "invalid_budget_tokens"),
    ({"agent_id": "a", "payload_text": "x", "budget_tokens": -5}, 400, "invalid_budget_tokens"),
    ({"agent_id": "a", "payload_text": "x", "deadline_ms": 1000}, 400, "deadline_in_past"),
    ({"agent_id": "a", "payload_text": "x", "priority": 101}, 400, "invalid_priority"),
    ({"agent_id": "a", "payload_text": "x", "priority": -1}, 400, "invalid_priority"),
    ({"agent_id": "a", "payload_text": "x", "priority": "high"}, 400, "invalid_priority"),
    ({"agent_id": "a", "payload_text": "x", "metadata": {"k": 1}}, 400, "invalid_metadata"),
    ({"agent_id": "a", "payload_text": "x", "dependencies": "d"}, 400, "invalid_dependencies"),
    (
        {"agent_id": "a", "payload_text": "x", "estimated_cost_tokens": -1},
        400,
        "invalid_estimated_cost_tokens",
    ),
    ({"agent_id": 7, "payload_text": "x"}, 400, "invalid_agent_id"),
    ([1, 2], 400, "invalid_body"),
    # Regressions found by schemathesis: only null means "absent"; a value of
    # the wrong type is refused even when it is falsy, or when another field
    # would have made it unused.
    ({"agent_id": "a", "payload_text": "x", "metadata": False}, 400, "invalid_metadata"),
    ({"agent_id": "a", "payload_text": "x", "dependencies": 0}, 400, "invalid_dependencies"),
    ({"agent_id": "a", "payload": "61", "payload_text": {}}, 400, "invalid_payload_text"),
    ({"agent_id": "a", "payload_text": "x", "priority": 2**63}, 400, "invalid_priority"),
]


@pytest.fixture
def gw(sims, gateways):
    return gateways(
        [openai_endpoint(sims("--latency-ms", "1"), "sim", group="gpt-4o", cost_per_1k_tokens=1.0)]
    )


def test_every_validation_rule_has_its_code(gw):
    with gw.client() as c:
        for body, status, code in INVALID:
            r = c.post("/messages", json=body)
            assert r.status_code == status, (body if len(str(body)) < 200 else code, r.text)
            assert r.json()["error"]["code"] == code
        r = c.post("/messages", content=b"{not json", headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
        r = c.post("/messages", content=b"")
        assert (r.status_code, r.json()["error"]["code"]) == (400, "empty_body")
        r = c.post(
            "/messages",
            content=b"\xff\x00garbage",
            headers={"content-type": "application/x-protobuf"},
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_protobuf"
        ok = c.post(
            "/messages", json={"agent_id": "a", "payload_text": "x", "deadline_ms": FUTURE_MS}
        )
        assert ok.status_code == 200


def test_oversized_body_is_refused_before_reading_it_whole(gw):
    with gw.client() as c:
        r = c.post("/messages", content=b"x" * (5 * 1024 * 1024))
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"

        def chunks():  # no Content-Length: refused while streaming
            for _ in range(100):
                yield b"y" * (1024 * 1024)

        r = c.post("/messages", content=chunks())
        assert r.status_code == 413


def test_protobuf_in_and_out(gw):
    msg = AIMessage(agent_id="proto-agent", payload=b"hello over protobuf", priority=70)
    with gw.client() as c:
        r = c.post(
            "/messages",
            content=pb.message_to_protobuf(msg),
            headers={"content-type": "application/x-protobuf"},
        )
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-protobuf"
        ack = pb2.Acknowledgment()
        ack.ParseFromString(r.content)
        assert ack.status == pb2.ACK_STATUS_PROCESSED
        assert ack.original_message_id == msg.message_id
        assert ack.tokens_used > 0
        batch = pb.batch_to_protobuf(
            [AIMessage(agent_id="p", payload=f"b{i}".encode()) for i in range(3)]
        )
        r = c.post(
            "/messages/batch", content=batch, headers={"content-type": "application/x-protobuf"}
        )
        acks = pb.acks_from_protobuf(r.content)
        assert [a.status.value for a in acks] == ["success"] * 3


def test_batch_json_gives_one_ack_per_message(gw):
    with gw.client() as c:
        body = {
            "messages": [
                {"agent_id": "b", "payload_text": "one"},
                {"agent_id": "b", "payload_text": "two", "metadata": {"model": "unknown"}},
                {"agent_id": "b", "payload_text": "three"},
            ]
        }
        acks = c.post("/messages/batch", json=body).json()["acknowledgments"]
        assert [a["status"] for a in acks] == ["success", "rejected", "success"]
        assert acks[1]["error_code"] == "unknown_group"
        r = c.post("/messages/batch", json={"messages": "nope"})
        assert r.status_code == 400
        r = c.post("/messages/batch", json={"messages": [{"agent_id": "B"}]})
        assert r.status_code == 400


def test_endpoints_api(gw, sims):
    extra = sims()
    with gw.client() as c:
        eps = c.get("/endpoints").json()["endpoints"]
        assert [e["endpoint_id"] for e in eps] == ["sim"]
        r = c.post(
            "/endpoints",
            json={
                "endpoint_id": extra.url,
                "group": "gpt-4o",
                "capacity": 8,
                "health_status": "HEALTHY",
                "cost_per_1k_tokens": 0.01,
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["url"] == extra.url
        assert r.json()["health_status"] == "healthy"
        got = c.get(f"/endpoints/{extra.url}").json()
        assert got["capacity"] == 8
        ack = c.post("/messages", json={"agent_id": "e", "payload_text": "to the new one"}).json()
        assert ack["endpoint_id"] == extra.url
        for bad, code in [
            ({"endpoint_id": "x", "health_status": "great"}, "invalid_health_status"),
            ({"endpoint_id": "x", "capacity": 0}, "invalid_capacity"),
            ({"endpoint_id": "x", "kind": "grpc"}, "invalid_kind"),
            ({"endpoint_id": "x", "url": "ftp://x"}, "invalid_url"),
            ({"capacity": 3}, "invalid_endpoint_id"),
        ]:
            r = c.post("/endpoints", json=bad)
            assert (r.status_code, r.json()["error"]["code"]) == (400, code)
        assert c.delete(f"/endpoints/{extra.url}").status_code == 204
        assert c.get(f"/endpoints/{extra.url}").status_code == 404
        assert c.delete("/endpoints/missing").status_code == 404


def test_budget_and_endpoint_numbers_are_bounded(gw):
    """Regressions: integers past what storage and the router hold were a
    503 (storage error, which also failed the next unrelated write) or a 500
    (after the endpoint was already persisted); they are a 400 now, and
    integral floats count as integers as they do in messages."""
    with gw.client() as c:
        for body, code in [
            ({"agent_id": "b", "tokens": 2**63}, "invalid_tokens"),
            ({"agent_id": "b", "tokens": 2**64 - 1}, "invalid_tokens"),
            ({"agent_id": "b", "tokens": 1, "reset_at": 2**63}, "invalid_reset_at"),
            ({"agent_id": "b", "tokens": 1, "reset_at": 1, "period_s": 2**62}, "invalid_period_s"),
            ({"agent_id": "b", "tokens": 1.5}, "invalid_tokens"),
            ({"agent_id": "b"}, "invalid_tokens"),
        ]:
            r = c.post("/budgets", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (400, code), (body, r.text)
        r = c.post("/budgets", json={"agent_id": "b", "tokens": 10.0, "period_s": 60.0})
        assert r.status_code == 201 and r.json()["initial_tokens"] == 10
        for field in ("capacity", "current_load"):
            r = c.post("/endpoints", json={"endpoint_id": "big", field: 2**32})
            assert (r.status_code, r.json()["error"]["code"]) == (400, f"invalid_{field}")
        assert c.get("/endpoints/big").status_code == 404  # nothing half-registered
        r = c.post("/endpoints", json={"endpoint_id": "big", "capacity": 2**32 - 1})
        assert r.status_code == 201
        assert c.delete("/endpoints/big").status_code == 204


def test_ids_with_control_characters_are_delivered(gw):
    """Regression: a message_id or trace_id with control characters went
    into the upstream request's headers as they were; aiohttp refused them
    (header injection guard) and the delivery died as "cancelled". They are
    percent-encoded on the way out now."""
    with gw.client() as c:
        for extra in (
            {"trace_id": "t\r\nX-Injected: 1"},
            {"message_id": "m\r\nX-Injected: 1"},
            {"message_id": "id-\u00e9\u4e2d\u0007"},
        ):
            body = {"agent_id": "ids", "payload_text": f"ids {extra}", **extra}
            r = c.post("/messages", json=body)
            assert r.status_code == 200 and r.json()["status"] == "success", r.text


def test_admin_key_guards_changes(sims, gateways):
    gw = gateways([openai_endpoint(sims(), "sim")], env={"AIMESH_ADMIN_KEY": "s3cret-admin"})
    with gw.client() as c:
        body = {"agent_id": "a", "tokens": 10}
        r = c.post("/budgets", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
        r = c.post("/budgets", json=body, headers={"authorization": "Bearer wrong"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key")
        r = c.post("/budgets", json=body, headers={"authorization": "Bearer s3cret-admin"})
        assert r.status_code == 201
        assert c.delete("/endpoints/sim").status_code == 401
    assert "s3cret-admin" not in gw.log_text()


async def test_public_bind_without_admin_key_refuses_changes():
    from aimesh.config import AiMeshConfig
    from aimesh.mesh import AiMesh
    from aimesh.server.app import create_app

    mesh = AiMesh(AiMeshConfig())
    app = create_app(mesh, admin_open=False, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.post("/endpoints", json={"endpoint_id": "http://127.0.0.1:1"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "admin_key_required"


def test_metrics_parse_and_stats(gw):
    with gw.client() as c:
        c.post("/budgets", json={"agent_id": "budgeted", "tokens": 500})
        c.post("/messages", json={"agent_id": "budgeted", "payload_text": "x"})
        for i in range(5):
            c.post("/messages", json={"agent_id": "m", "payload_text": f"x{i}"})
        c.post("/messages", json={"agent_id": "BAD", "payload_text": "x"})
        text = c.get("/metrics").text
        stats = c.get("/stats").json()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    msgs = families["aimesh_messages"]
    success = [
        s
        for s in msgs.samples
        if s.name == "aimesh_messages_total"
        and s.labels == {"status": "success", "endpoint": "sim", "tenant": "_default"}
    ]
    assert success and success[0].value == 6
    assert "aimesh_processing_latency_seconds" in families
    assert "aimesh_queue_depth" in families
    assert "aimesh_endpoint_latency_p99_seconds" in families
    remaining = [
        s
        for s in families["aimesh_budget_remaining_tokens"].samples
        if s.labels == {"agent": "budgeted", "tenant": "_default"}
    ]
    assert remaining and 0 < remaining[0].value < 500
    assert stats["messages"]["success"] == 6
    assert stats["tokens_used"] > 0
    ep = stats["endpoints"]["sim"]
    assert ep["requests"] == 6
    assert 0 < ep["latency_ms"]["p50"] <= ep["latency_ms"]["p99"] <= ep["latency_ms"]["p999"]


def test_openapi_lists_every_route(gw):
    """Every route the app serves is in the spec (read from the app itself,
    so a new route without a spec entry fails here)."""
    import re

    from aimesh import AiMesh, AiMeshConfig
    from aimesh.server.app import create_app

    app = create_app(AiMesh(AiMeshConfig()), manage_lifecycle=False)
    served = {
        re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)
        for r in app.routes
        if getattr(r, "include_in_schema", True)  # the dashboard's page and assets
    }
    with gw.client() as c:
        spec = c.get("/openapi.json").json()
    assert served - set(spec["paths"]) == set()
    assert "/v1/chat/completions" in served and "/messages" in served
