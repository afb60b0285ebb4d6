"""Adapters, retries, fallback, breakers and secrets, against real simulator
processes with the real native router."""

from __future__ import annotations

import logging
import time

import orjson
import pytest

from aimesh import _native
from aimesh.config import AiMeshConfig
from aimesh.endpoints import DeliveryRequest
from aimesh.endpoints.adapters import chat_body, chat_url, header_value
from aimesh.endpoints.breaker import CircuitBreaker
from aimesh.endpoints.delivery import Deliverer
from aimesh.errors import UpstreamError
from aimesh.mesh import AiMesh
from aimesh.models import AckStatus, AIMessage, EndpointMetrics


def setup(*endpoints: EndpointMetrics, **kw) -> Deliverer:
    router = _native.Router()
    d = Deliverer(router, **kw)
    for ep in endpoints:
        router.upsert_endpoint(
            ep.endpoint_id,
            group=ep.group,
            capacity=ep.capacity,
            cost_per_1k_tokens=ep.cost_per_1k_tokens,
        )
        d.add_endpoint(ep)
    return d


def req(payload: bytes = b"hello", **kw) -> DeliveryRequest:
    return DeliveryRequest(payload=payload, message_id="m-1", **kw)


async def test_openai_adapter_text_and_json_bodies(sims):
    sim = sims("--latency-ms", "1", "--completion-tokens", "7")
    d = setup(EndpointMetrics("s", url=sim.url, group="gpt-4o"))
    try:
        res = await d.deliver(req(b"plain text prompt"), d.router.route())
        body = orjson.loads(res.result)
        assert "plain text prompt" in body["choices"][0]["message"]["content"]
        assert body["model"] == "gpt-4o"  # group fills a missing model
        assert res.tokens_used == body["usage"]["total_tokens"]
        chat = orjson.dumps({"model": "mine", "messages": [{"role": "user", "content": "hi"}]})
        res = await d.deliver(req(chat), d.router.route())
        assert orjson.loads(res.result)["model"] == "mine"
        assert d.router.endpoint("s").requests == 2
        assert d.histograms["s"].count == 2
    finally:
        await d.aclose()
    assert sim.stats()["by_path"] == {"/v1/chat/completions": 2}


def test_chat_url_and_model_rules():
    assert chat_url("http://h/v1") == "http://h/v1/chat/completions"
    assert chat_url("http://h/") == "http://h/v1/chat/completions"
    assert chat_url("http://h/x/chat/completions") == "http://h/x/chat/completions"
    ep = EndpointMetrics("e", group="g", model="upstream-name")
    assert chat_body(ep, b'{"model":"other","messages":[]}')["model"] == "upstream-name"
    assert chat_body(ep, b"{not json")["messages"][0]["content"] == "{not json"


async def test_http_adapter(sims):
    sim = sims("--latency-ms", "1")
    d = setup(EndpointMetrics("h", url=sim.url + "/generate", kind="http"))
    try:
        res = await d.deliver(req(b"abc"), d.router.route())
        assert res.result == b"generated:cba"
        assert res.tokens_used > 0
    finally:
        await d.aclose()


async def test_api_key_from_env_is_sent_and_never_leaked(sims, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "sk-test-0123456789-SECRET"
    monkeypatch.setenv("SIM_KEY", secret)
    good = sims("--latency-ms", "1")
    bad = sims("--failure-rate", "1", "--failure-status", "500")
    d = setup(
        EndpointMetrics("bad", url=bad.url, api_key_env="SIM_KEY", cost_per_1k_tokens=0.1),
        EndpointMetrics("good", url=good.url, api_key_env="SIM_KEY", cost_per_1k_tokens=5),
        backoff_base_s=0.001,
    )
    try:
        await d.deliver(req(), d.router.route())
        monkeypatch.delenv("SIM_KEY")
        with pytest.raises(UpstreamError) as e:
            await d.deliver(req(), d.router.route(exclude=["bad"]))
        assert e.value.code == "missing_api_key" and "SIM_KEY" in e.value.message
    finally:
        await d.aclose()
    assert good.stats()["with_authorization"] == 1
    assert secret not in caplog.text and secret not in str(e.value.details)


async def test_upstream_400_is_not_retried_and_does_not_fall_back(sims):
    rejecting = sims("--failure-rate", "1", "--failure-status", "400")
    backup = sims()
    d = setup(
        EndpointMetrics("r", url=rejecting.url, cost_per_1k_tokens=0.1),
        EndpointMetrics("b", url=backup.url, cost_per_1k_tokens=9),
    )
    try:
        with pytest.raises(UpstreamError) as e:
            await d.deliver(req(), d.router.route())
        assert e.value.code == "upstream_rejected"
        assert e.value.details["attempts"][0]["status"] == 400
    finally:
        await d.aclose()
    assert rejecting.stats()["requests"] == 1
    assert backup.stats()["requests"] == 0
    assert not d.breakers["r"].refuses()


async def test_429_retry_after_is_honoured_then_falls_back(sims):
    limited = sims("--failure-rate", "1", "--failure-status", "429")
    limited.configure(retry_after_s=0.3)
    backup = sims("--latency-ms", "1")
    d = setup(
        EndpointMetrics("l", url=limited.url, cost_per_1k_tokens=0.1),
        EndpointMetrics("b", url=backup.url, cost_per_1k_tokens=9),
        max_attempts_per_endpoint=2,
        backoff_base_s=0.001,
    )
    try:
        t0 = time.monotonic()
        res = await d.deliver(req(), d.router.route())
        assert time.monotonic() - t0 >= 0.3
        assert res.endpoint_id == "b" and res.fallbacks_used == 1 and res.attempts == 3
    finally:
        await d.aclose()
    assert limited.stats()["requests"] == 2


async def test_deadline_bounds_delivery(sims):
    slow = sims("--latency-ms", "2000", "--jitter-ms", "0")
    d = setup(EndpointMetrics("slow", url=slow.url), max_attempts_per_endpoint=3)
    try:
        t0 = time.monotonic()
        with pytest.raises(UpstreamError) as e:
            await d.deliver(req(deadline_ms=int(time.time() * 1000) + 300), d.router.route())
        assert time.monotonic() - t0 < 1.5
        assert e.value.code in ("deadline_exceeded", "upstream_failed")
        with pytest.raises(UpstreamError) as e:
            await d.deliver(req(deadline_ms=int(time.time() * 1000) - 1), d.router.route())
        assert e.value.code == "deadline_exceeded"
    finally:
        await d.aclose()
    assert d.router.endpoint("slow").current_load == 0


def test_breaker_states_with_an_injected_clock():
    t = [0.0]
    b = CircuitBreaker(failures=2, cooldown_s=5, clock=lambda: t[0])
    assert b.allow()
    b.failure()
    assert b.state == b.CLOSED and not b.refuses()
    b.failure()
    assert b.state == b.OPEN and b.refuses() and not b.allow()
    t[0] = 5.0
    assert not b.refuses()
    assert b.allow() and b.state == b.HALF_OPEN
    assert b.refuses() and not b.allow()  # one probe at a time
    b.failure()
    assert b.state == b.OPEN
    t[0] = 10.0
    assert b.allow()
    b.success()
    assert b.state == b.CLOSED and b.allow()


async def test_active_health_checks_mark_endpoints(sims):
    up = sims()
    d = setup(
        EndpointMetrics("up", url=up.url),
        EndpointMetrics("down", url="http://127.0.0.1:9"),  # nothing listens there
    )
    try:
        assert await d.check_health() == {"up": True, "down": False}
        assert d.router.endpoint("down").health == "unhealthy"
        assert d.router.endpoint("up").health == "healthy"
        assert d.router.route().target_endpoint == "up"
    finally:
        await d.aclose()


def test_client_ids_become_safe_header_values():
    assert header_value("01a2-b3") == "01a2-b3"  # plain ids go as they are
    assert header_value("m\r\nX-Injected: 1") == "m%0D%0AX-Injected%3A%201"
    assert header_value("id-\u00e9") == "id-%C3%A9"
    assert header_value("\x07") == "%07"


async def test_ids_with_control_characters_reach_the_upstream(sims):
    """Regression: such ids made aiohttp refuse the request (ValueError, not
    an upstream failure) and the delivery died."""
    sim = sims("--latency-ms", "1")
    d = setup(EndpointMetrics("s", url=sim.url, group="gpt-4o"))
    try:
        request = DeliveryRequest(
            payload=b"hi", message_id="m\r\nX-Injected: 1", trace_id="\x07trace"
        )
        res = await d.deliver(request, d.router.route())
        assert res.endpoint_id == "s"
    finally:
        await d.aclose()
    assert sim.stats()["unique_message_ids"] == 1


async def test_a_bug_in_delivery_is_a_failed_ack_not_a_cancellation(tmp_path, monkeypatch):
    """An unexpected exception in delivery gives the message a final
    ``internal_error`` ack (it used to be reported as ``cancelled``, with the
    exception left in a task nobody awaited)."""
    cfg = AiMeshConfig(data_dir=str(tmp_path), quic_addr="off")
    cfg.endpoints.append(EndpointMetrics("e", url="http://127.0.0.1:9", group="g"))
    mesh = AiMesh(cfg)
    await mesh.start()
    try:

        async def broken(*args, **kw):
            raise RuntimeError("a bug")

        monkeypatch.setattr(mesh.deliverer, "deliver", broken)
        ack = await mesh.process_message(AIMessage(agent_id="a", payload=b"x"))
        assert (ack.status, ack.error_code) == (AckStatus.FAILED, "internal_error")
    finally:
        await mesh.close()
