"""Fuzz the HTTP entry points (atheris): JSON and protobuf bodies, and the
headers that steer them, through the real route handlers of the ASGI app,
in-process (no sockets).

A route may answer a 4xx (an ``AiMeshError``), a 2xx, or, because the
harness's Mesh has no endpoint it can deliver to, a 502/503 naming
``no_endpoint_available``; anything else (a 500, a storage error, an
exception out of the app, a response without the security headers) is a
crash.

    python fuzz/fuzz_http.py -write_seeds=CORPUS     # valid bodies of every route
    python fuzz/fuzz_http.py -runs=50000 CORPUS      # bounded (tests/test_fuzz.py)
    make fuzz                                        # ten minutes

An input is ``[target, flags, body...]``: ``target`` picks the route (see
``TARGETS``), ``flags`` the content type, the Accept header, how the body
is framed (Content-Length exact, absent with the body in two chunks, or
malformed) and whether the body's first line is a ``traceparent`` header.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import atheris
import orjson

with atheris.instrument_imports(include=["aimesh"]):
    from aimesh.config import AiMeshConfig
    from aimesh.mesh import AiMesh
    from aimesh.models import AIMessage, EndpointMetrics
    from aimesh.server import protobuf as pb
    from aimesh.server.app import create_app

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

#: (app, path, query): "msg" is the Mesh that takes messages, "admin" the
#: one whose endpoints and budgets change (kept apart so that a fuzzed
#: endpoint URL is never delivered to).
TARGETS = [
    ("msg", "/messages", b""),
    ("msg", "/messages", b"mode=async"),
    ("msg", "/messages/batch", b""),
    ("msg", "/messages/batch", b"mode=async"),
    ("msg", "/route", b""),
    ("msg", "/v1/chat/completions", b""),
    ("admin", "/endpoints", b""),
    ("admin", "/budgets", b""),
    ("admin", "/tenants", b""),
]
CONTENT_TYPES = [
    b"application/json",
    b"application/x-protobuf",
    b"",
    b"application/x-protobuf; v=1",
]
ACCEPTS = [b"", b"application/x-protobuf", b"application/json", b"*/*"]
#: The only 5xx codes a route may answer here (nothing can be delivered).
ALLOWED_5XX = {"no_endpoint_available", "queue_full"}


class Crash(Exception):
    """A route answered something no input may cause."""


def _mesh(data_dir: str) -> AiMesh:
    cfg = AiMeshConfig(
        data_dir=data_dir,
        quic_addr="off",
        durable_sync=False,  # speed: nothing here needs to survive a crash
        rate_limit_rps=1e9,  # past admission: dedup, budgets, the queue
    )
    # A group with one endpoint that routing never picks: group checks and
    # routing run, and nothing is ever sent anywhere.
    cfg.endpoints.append(
        EndpointMetrics(
            endpoint_id="never",
            url="http://127.0.0.1:9",
            group="g",
            health_status="unhealthy",
        )
    )
    return AiMesh(cfg)


class Harness:
    """Two started Meshes and their apps on one event loop."""

    def __init__(self) -> None:
        logging.disable(logging.CRITICAL)  # _wrap logs a crash; the harness raises it
        self.loop = asyncio.new_event_loop()
        root = tempfile.mkdtemp(prefix="aimesh-fuzz-http-")
        self.meshes = {
            "msg": _mesh(os.path.join(root, "msg")),
            "admin": _mesh(os.path.join(root, "admin")),
        }
        self.apps: dict[str, ASGIApp] = {}
        for name, mesh in self.meshes.items():
            self.loop.run_until_complete(mesh.start())
            self.apps[name] = create_app(mesh, admin_open=True, manage_lifecycle=False)

    def run(self, data: bytes) -> None:
        self.loop.run_until_complete(self.one(data))

    async def one(self, data: bytes) -> None:
        if len(data) < 2:
            return
        app_name, path, query = TARGETS[data[0] % len(TARGETS)]
        flags, body = data[1], data[2:]
        headers = [(b"host", b"fuzz")]
        ctype = CONTENT_TYPES[flags & 3]
        if ctype:
            headers.append((b"content-type", ctype))
        accept = ACCEPTS[(flags >> 2) & 3]
        if accept:
            headers.append((b"accept", accept))
        if flags & 0x40:
            line, _, body = body.partition(b"\n")
            headers.append((b"traceparent", line[:256]))
        framing = (flags >> 4) & 3
        chunks = [body]
        if framing == 0:
            headers.append((b"content-length", str(len(body)).encode()))
        elif framing == 1:
            chunks = [body[: len(body) // 2], body[len(body) // 2 :]]
        elif framing == 2:
            headers.append((b"content-length", b"1x" if flags & 0x80 else b"-1"))
        else:
            headers.append((b"content-length", str(1 << 40).encode()))
        status, out_headers, answer = await _call(self.apps[app_name], path, query, headers, chunks)
        _check(path, status, out_headers, answer)


async def _call(
    app: ASGIApp,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One POST through the ASGI app, as uvicorn would make it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 9000),
    }
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    status = 0
    out_headers: dict[bytes, bytes] = {}
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update((k.lower(), v) for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, out_headers, b"".join(parts)


def _check(path: str, status: int, headers: dict[bytes, bytes], answer: bytes) -> None:
    if headers.get(b"x-content-type-options") != b"nosniff":
        raise Crash(f"{path}: {status} without X-Content-Type-Options")
    if status < 400:
        return
    # Every error is JSON with a machine-readable code, whatever was asked.
    try:
        code = orjson.loads(answer)["error"]["code"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Crash(f"{path}: {status} is not a JSON error: {answer[:200]!r}") from None
    if status >= 500 and not (status in (502, 503) and code in ALLOWED_5XX):
        raise Crash(f"{path}: {status} {code}: {answer[:300]!r}")


def seeds() -> dict[str, bytes]:
    """Valid inputs of every target, in the harness's format."""
    msg = {"agent_id": "agent-1", "payload_text": "hello", "priority": 60}
    full = {
        **msg,
        "message_id": "m-1",
        "estimated_cost_tokens": 10,
        "budget_tokens": 100,
        "deadline_ms": 4_000_000_000_000,
        "dependencies": ["m-0"],
        "metadata": {"model": "g", "k": "v"},
        "dedup_context": "ctx",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    proto = AIMessage(agent_id="agent-1", payload=b"hello", metadata={"model": "g"})
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"
    chat = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    return {
        "message-json": bytes([0, 0]) + orjson.dumps(msg),
        "message-full": bytes([1, 0]) + orjson.dumps(full),
        "message-proto": bytes([0, 1 | 4]) + proto.to_protobuf(),
        "message-traceparent": bytes([0, 0x40]) + traceparent + orjson.dumps(msg),
        "batch-json": bytes([2, 0x10]) + orjson.dumps({"messages": [msg, full]}),
        "batch-proto": bytes([3, 1]) + pb.batch_to_protobuf([proto, proto]),
        "route-json": bytes([4, 0]) + orjson.dumps(full),
        "chat": bytes([5, 0]) + orjson.dumps(chat),
        "chat-stream": bytes([5, 0]) + orjson.dumps({**chat, "stream": True}),
        "endpoint": bytes([6, 0])
        + orjson.dumps(
            {"endpoint_id": "e-1", "url": "http://127.0.0.1:9", "capacity": 5, "tags": ["t"]}
        ),
        "budget": bytes([7, 0])
        + orjson.dumps({"agent_id": "agent-1", "tokens": 1000, "reset_at": 1, "period_s": 60}),
    }


def write_seeds(directory: str) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (Path(directory) / name).write_bytes(data)


def main() -> None:
    for arg in sys.argv[1:]:
        if arg.startswith("-write_seeds="):
            write_seeds(arg.split("=", 1)[1])
            return
    harness = Harness()
    atheris.Setup(sys.argv, harness.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
