"""Response hardening (security headers, no CORS, 405 with Allow) and the
request-head guards of the HTTP server (deadline and size) on a real
gateway: they cut slow or huge heads and leave slow answers and bodies
alone."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from aimesh import AiMesh, AiMeshConfig
from aimesh.server.app import create_app
from aimesh.server.protocol import GuardedHttpProtocol, guarded_protocol
from tests.conftest import openai_endpoint
from tests.gateway import Gateway, Sim

HEADER_TIMEOUT_S = 1.0
ADMIN_PATHS = ["/endpoints", "/budgets", "/stats", "/dashboard/state", "/openapi.json"]


@pytest.fixture
def app_client() -> httpx.AsyncClient:
    app = create_app(AiMesh(AiMeshConfig()), admin_open=True, manage_lifecycle=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def assert_hardened(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff", r.request.url
    assert "access-control-allow-origin" not in r.headers
    assert "server" not in r.headers


async def test_every_answer_has_the_security_headers(app_client: httpx.AsyncClient) -> None:
    async with app_client as c:
        answers = [
            await c.get("/health"),
            await c.get("/metrics"),
            await c.get("/openapi.json"),
            await c.get("/endpoints"),
            await c.get("/no/such/route"),  # 404 from the router
            await c.post("/messages", content=b"{"),  # 400 from a route
            await c.delete("/health"),  # 405
            await c.post("/messages", json={"agent_id": "a", "payload_text": "x"}),  # 503
        ]
        for r in answers:
            assert_hardened(r)
            assert r.headers["cache-control"] == "no-store"
        # The dashboard's page keeps its own policy (revalidated, not no-store).
        page = await c.get("/dashboard")
        assert_hardened(page)
        assert page.headers["cache-control"] == "no-cache"
        assert "content-security-policy" in page.headers


async def test_cors_stays_off(app_client: httpx.AsyncClient) -> None:
    """No origin gets CORS rights: a preflight is the app's JSON 405, and no
    answer carries Access-Control-Allow-*."""
    preflight = {
        "origin": "https://evil.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization",
    }
    async with app_client as c:
        for path in ["/messages", "/v1/chat/completions", *ADMIN_PATHS]:
            r = await c.options(path, headers=preflight)
            assert r.status_code == 405, path
            assert r.json()["error"]["code"] == "method_not_allowed"
            assert not [h for h in r.headers if h.startswith("access-control-")], r.headers
            assert_hardened(r)
        r = await c.get("/health", headers={"origin": "https://evil.example"})
        assert not [h for h in r.headers if h.startswith("access-control-")]


async def test_405_names_every_allowed_method(app_client: httpx.AsyncClient) -> None:
    async with app_client as c:
        r = await c.put("/endpoints")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD, POST"  # two routes share the path
        r = await c.delete("/messages")
        assert r.headers["allow"] == "POST"


def test_protocol_limits_are_checked() -> None:
    cls = guarded_protocol(2.5, 1000)
    assert issubclass(cls, GuardedHttpProtocol)
    assert (cls.header_timeout, cls.max_head_bytes) == (2.5, 1000)
    for bad in ((0, 1000), (1.0, 0), (-1, 10)):
        with pytest.raises(ValueError):
            guarded_protocol(*bad)
    with pytest.raises(ValueError):
        guarded_protocol(1.0, body_timeout=0)
    with pytest.raises(ValueError):
        guarded_protocol(1.0, max_connections_per_ip=-1)


@pytest.fixture
def gw(sims: Callable[..., Sim], gateways: Callable[..., Gateway]) -> Gateway:
    # Upstream answers take longer than the head deadline.
    slow = sims("--latency-ms", str(HEADER_TIMEOUT_S * 1500), "--jitter-ms", "0")
    return gateways(
        [openai_endpoint(slow, "slow", group="gpt-4o")],
        env={"AIMESH_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)},
    )


def raw(port: int, data: bytes, wait: float = 5.0, then: bytes = b"") -> tuple[bytes, float]:
    """Send ``data`` (and ``then`` a moment later, as another packet), read
    until the server closes (bounded by ``wait``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        t = time.monotonic()
        s.sendall(data)
        if then:
            time.sleep(0.2)
            s.sendall(then)
        out = b""
        while time.monotonic() - t < wait:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            out += chunk
        return out, time.monotonic() - t


def test_head_deadline_and_size_on_a_real_server(gw: Gateway) -> None:
    # A head that never ends: 408, with a JSON error, after the deadline.
    out, took = raw(gw.port, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert out.startswith(b"HTTP/1.1 408"), out
    assert orjson.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "header_timeout"
    assert HEADER_TIMEOUT_S * 0.9 <= took < HEADER_TIMEOUT_S + 2
    # A connection that never sends a byte: closed silently.
    out, took = raw(gw.port, b"")
    assert out == b"" and took < HEADER_TIMEOUT_S + 2
    # After an answer, a stray CRLF (no request) used to disarm uvicorn's
    # keep-alive timer for good; the deadline closes the connection now.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=HEADER_TIMEOUT_S + 3) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'"ok"' not in answer:
            answer += s.recv(4096)
        s.sendall(b"\r\n")
        t = time.monotonic()
        assert s.recv(4096) == b""  # closed, not left open (recv would time out)
        assert time.monotonic() - t < HEADER_TIMEOUT_S + 2
    # A head over 64 KiB: 431 (here in one piece, so the answer is read).
    out, _ = raw(gw.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
    assert out.startswith(b"HTTP/1.1 431"), out[:100]
    # A head just under the limit is fine.
    head = b"GET /health HTTP/1.1\r\nConnection: close\r\nX-Big: " + b"a" * 60_000
    out, _ = raw(gw.port, head + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out[:100]
    answer_head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nx-content-type-options: nosniff" in answer_head
    assert b"\r\nserver:" not in answer_head  # uvicorn's is off


def test_slow_answers_and_slow_bodies_are_not_cut(gw: Gateway) -> None:
    """The deadline is on the head only: an answer that takes longer (a slow
    upstream, a stream) and a body that arrives slowly both complete."""
    with gw.client() as c:
        r = c.post("/messages", json={"agent_id": "slow", "payload_text": "take your time"})
        assert r.status_code == 200 and r.json()["status"] == "success"
        assert r.elapsed.total_seconds() > HEADER_TIMEOUT_S
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as s:
            assert s.status_code == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            assert s.headers["cache-control"] == "no-cache"  # the stream's own
            assert s.headers["x-content-type-options"] == "nosniff"
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"

        # A stray byte after the request does not cut the answer in progress
        # when the head deadline passes: the answer comes, then the close.
        body = orjson.dumps({"agent_id": "slow", "payload_text": "stray byte"})
        request = (
            b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        out, took = raw(gw.port, request, wait=10, then=b"\r\n")
        assert out.startswith(b"HTTP/1.1 200"), out[:200]
        assert b'"success"' in out
        # Answered after the deadline, and closed right after the answer.
        assert HEADER_TIMEOUT_S < took < HEADER_TIMEOUT_S * 1.5 + 2

        def dribble():
            body = orjson.dumps({"agent_id": "slow", "payload_text": "dribbled"})
            for i in range(0, len(body), 8):
                time.sleep(HEADER_TIMEOUT_S * 2 / (len(body) / 8))
                yield body[i : i + 8]

        r = c.post("/route", content=dribble(), headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def test_slow_bodies_and_too_many_connections_are_cut(
    sims: Callable[..., Sim], gateways: Callable[..., Gateway]
) -> None:
    """With a body deadline of 1 s a dribbled body is answered 408 and cut;
    past the per-address connection cap a new connection gets 503."""
    sim = sims("--latency-ms", "1")
    g = gateways(
        [openai_endpoint(sim, "sim")],
        env={"AIMESH_BODY_TIMEOUT_S": "1", "AIMESH_MAX_CONNECTIONS_PER_IP": "4"},
    )
    head = (
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    out, took = raw(g.port, head + b'{"agent_id": ', wait=6)
    assert out.startswith(b"HTTP/1.1 408"), out[:200]
    assert orjson.loads(out.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"
    assert 0.9 <= took < 3
    # Four idle connections hold the cap; the fifth is refused at once.
    held = [socket.create_connection(("127.0.0.1", g.port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)
        out, took = raw(g.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", wait=5)
        assert out.startswith(b"HTTP/1.1 503"), out[:200]
        assert b"too_many_connections" in out and took < 2
    finally:
        for s in held:
            s.close()
    # Closed connections free their places.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if httpx.get(f"{g.url}/health", timeout=2).status_code == 200:
            break
        time.sleep(0.05)
    with g.client() as c:
        r = c.post("/messages", json={"agent_id": "a", "payload_text": "after"})
        assert r.status_code == 200
    assert "Traceback" not in g.log_text()


async def test_deeply_nested_json_is_a_400(app_client: httpx.AsyncClient) -> None:
    """JSON nesting is bounded (orjson refuses past 1024 levels): a 400 with
    a code on every JSON route, never a 500 or a stack overflow."""
    deep = "[" * 20_000 + "]" * 20_000  # under every route's body limit
    shallow = "[" * 500 + "]" * 500
    async with app_client as c:
        for path in ("/messages", "/messages/batch", "/route", "/v1/chat/completions", "/budgets"):
            for doc in (deep, shallow):  # past orjson's limit, and a valid-JSON wrong type
                body = '{"agent_id": "a", "payload_text": "x", "metadata": ' + doc + "}"
                r = await c.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 400, (path, r.status_code, r.text[:200])


async def test_agent_ids_are_bounded(app_client: httpx.AsyncClient) -> None:
    """An agent id names budgets, limiter keys and a tenant's agents: at most
    256 characters, on every route that takes one."""
    long_id = "a" * 257
    async with app_client as c:
        for path, body in (
            ("/messages", {"agent_id": long_id, "payload_text": "x"}),
            ("/route", {"agent_id": long_id, "payload_text": "x"}),
            ("/budgets", {"agent_id": long_id, "tokens": 5}),
        ):
            r = await c.post(path, json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_agent_id", path
        r = await c.post(
            "/messages/batch", json={"messages": [{"agent_id": long_id, "payload_text": "x"}]}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_agent_id"
