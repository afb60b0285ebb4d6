"""The simulator: a raw ASGI app (fast enough to be a benchmark baseline)."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 8 * 1024 * 1024
DISTRIBUTIONS = ("fixed", "uniform", "normal", "exponential", "lognormal")


@dataclass
class SimConfig:
    """Behaviour of the simulator; every field can be changed at run time
    with ``POST /_sim/config``."""

    latency_ms: float = 20.0
    jitter_ms: float = 5.0
    dist: str = "normal"
    completion_tokens: int = 16
    failure_rate: float = 0.0
    failure_status: int = 500
    retry_after_s: float = 1.0
    hang_rate: float = 0.0
    hang_s: float = 600.0
    model: str = "aimesh-sim"
    stream_chunks: int = 4
    chunk_delay_ms: float = 5.0
    # Cut a streamed answer after this many content events (0 = never):
    # a stream that breaks after its first byte.
    stream_break_after: int = 0
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}")
            setattr(self, key, value)
        self.check()

    def check(self) -> None:
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"dist must be one of {DISTRIBUTIONS}")
        if not 0.0 <= self.failure_rate <= 1.0 or not 0.0 <= self.hang_rate <= 1.0:
            raise ValueError("failure_rate and hang_rate must be within 0..1")
        if self.latency_ms < 0 or self.jitter_ms < 0 or self.completion_tokens < 0:
            raise ValueError("latency, jitter and tokens must be >= 0")


class SimulatorApp:
    """ASGI application of the simulator."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.config.check()
        self.rng = random.Random(self.config.seed)
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.message_ids: Counter[str] = Counter()
        self.authorized = 0
        # W3C trace ids of the requests seen (to check trace propagation).
        self.trace_ids: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        repeated = sum(1 for c in self.message_ids.values() if c > 1)
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "tokens": self.tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "unique_message_ids": len(self.message_ids),
            "repeated_message_ids": repeated,
            "with_authorization": self.authorized,
            "trace_ids": dict(self.trace_ids),
            "config": asdict(self.config),
        }

    # -- ASGI -------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = await _read_body(receive)
        if body is None:
            await _json(send, 413, _error("request body too large", "invalid_request_error"))
            return
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path.startswith("/_sim/"):
            await self._control(path, method, body, send)
            return
        if path == "/health" and method == "GET":
            await _json(send, 200, {"status": "ok", "simulator": True})
            return
        if path == "/v1/models" and method == "GET":
            data = [{"id": self.config.model, "object": "model", "owned_by": "aimesh-sim"}]
            await _json(send, 200, {"object": "list", "data": data})
            return
        if method != "POST" or path not in ("/v1/chat/completions", "/generate"):
            await _json(send, 404, _error(f"no route {method} {path}", "not_found"))
            return
        self.requests += 1
        self.by_path[path] += 1
        mid = headers.get("x-aimesh-message-id")
        if mid:
            self.message_ids[mid] += 1
        if headers.get("authorization"):
            self.authorized += 1
        parent = headers.get("traceparent", "").split("-")
        if len(parent) == 4:
            self.trace_ids[parent[1]] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status = await self._serve(path, body, send)
        finally:
            self.in_flight -= 1
        self.by_status[status] += 1

    async def _serve(self, path: str, body: bytes, send: Send) -> int:
        cfg = self.config
        if cfg.hang_rate and self.rng.random() < cfg.hang_rate:
            await asyncio.sleep(cfg.hang_s)
        await asyncio.sleep(self._latency() / 1000)
        if cfg.failure_rate and self.rng.random() < cfg.failure_rate:
            headers = []
            if cfg.failure_status == 429:
                headers.append((b"retry-after", str(cfg.retry_after_s).encode()))
            await _json(
                send, cfg.failure_status, _error("simulated failure", "server_error"), headers
            )
            return cfg.failure_status
        if path == "/generate":
            tokens = max(1, len(body) // 4) + cfg.completion_tokens
            self.tokens += tokens
            await _raw(
                send,
                200,
                b"generated:" + body[::-1],
                b"application/octet-stream",
                [(b"x-tokens-used", str(tokens).encode())],
            )
            return 200
        try:
            req = orjson.loads(body)
            messages = req["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty list")
            prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            await _json(send, 400, _error(f"invalid chat request: {e}", "invalid_request_error"))
            return 400
        model = str(req.get("model") or cfg.model)
        prompt_tokens = max(1, len(prompt) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": cfg.completion_tokens,
            "total_tokens": prompt_tokens + cfg.completion_tokens,
        }
        self.tokens += usage["total_tokens"]
        text = f"[{cfg.model}] {prompt[:200]}"
        created = int(time.time())
        cid = f"chatcmpl-sim-{self.requests}"
        if req.get("stream"):
            include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
            await self._stream(send, cid, created, model, text, usage if include_usage else None)
            return 200
        await _json(
            send,
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )
        return 200

    async def _stream(
        self,
        send: Send,
        cid: str,
        created: int,
        model: str,
        text: str,
        usage: dict[str, int] | None,
    ) -> None:
        cfg = self.config
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        n = max(1, cfg.stream_chunks)
        step = max(1, -(-len(text) // n))
        pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]

        def chunk(
            delta: dict[str, Any], finish: str | None, extra: dict[str, Any] | None = None
        ) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if extra:
                obj.update(extra)
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        await send(
            {
                "type": "http.response.body",
                "body": chunk({"role": "assistant"}, None),
                "more_body": True,
            }
        )
        for i, piece in enumerate(pieces):
            if cfg.stream_break_after and i >= cfg.stream_break_after:
                # Abort the response mid-body: the client sees a broken stream.
                raise SimulatedStreamBreak(f"stream cut after {i} events")
            await asyncio.sleep(cfg.chunk_delay_ms / 1000)
            await send(
                {
                    "type": "http.response.body",
                    "body": chunk({"content": piece}, None),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": chunk({}, "stop"), "more_body": True})
        if usage is not None:
            final = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(final) + b"\n\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _control(self, path: str, method: str, body: bytes, send: Send) -> None:
        if path == "/_sim/stats" and method == "GET":
            await _json(send, 200, self.stats())
        elif path == "/_sim/reset" and method == "POST":
            self.reset()
            await _json(send, 200, self.stats())
        elif path == "/_sim/config" and method == "POST":
            try:
                changes = orjson.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object")
                self.config.update(changes)
                if "seed" in changes:
                    self.rng = random.Random(self.config.seed)
            except (ValueError, TypeError, orjson.JSONDecodeError) as e:
                await _json(send, 400, _error(str(e), "invalid_request_error"))
                return
            await _json(send, 200, asdict(self.config))
        else:
            await _json(send, 404, _error(f"no route {method} {path}", "not_found"))

    def _latency(self) -> float:
        c, r = self.config, self.rng
        if c.dist == "fixed" or c.jitter_ms == 0:
            v = c.latency_ms
        elif c.dist == "uniform":
            v = r.uniform(c.latency_ms - c.jitter_ms, c.latency_ms + c.jitter_ms)
        elif c.dist == "normal":
            v = r.gauss(c.latency_ms, c.jitter_ms)
        elif c.dist == "exponential":
            v = c.latency_ms + r.expovariate(1.0 / c.jitter_ms)
        else:  # lognormal with the given mean and spread
            v = c.latency_ms * r.lognormvariate(0.0, c.jitter_ms / max(c.latency_ms, 1e-9))
        return max(0.0, v)


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": None}}


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    size = 0
    while True:
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _raw(
    send: Send, status: int, body: bytes, ctype: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(
    send: Send, status: int, obj: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await _raw(send, status, orjson.dumps(obj), b"application/json", headers)


# -- CLI ----------------------------------------------------------------------


class SimulatedStreamBreak(Exception):
    """Raised inside a streamed answer to cut the connection on purpose."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``aimesh sim``."""
    d = SimConfig()
    parser.add_argument("--host", default="127.0.0.1", help="listen host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8101, help="listen port (default 8101)")
    parser.add_argument("--latency-ms", type=float, default=d.latency_ms, help="mean latency")
    parser.add_argument("--jitter-ms", type=float, default=d.jitter_ms, help="latency spread")
    parser.add_argument(
        "--dist", choices=DISTRIBUTIONS, default=d.dist, help="latency distribution"
    )
    parser.add_argument(
        "--completion-tokens",
        type=int,
        default=d.completion_tokens,
        help="completion tokens reported per reply",
    )
    parser.add_argument(
        "--failure-rate",
        type=float,
        default=d.failure_rate,
        help="share of requests that fail (0..1)",
    )
    parser.add_argument(
        "--failure-status",
        type=int,
        default=d.failure_status,
        help="status code of failures (500, 503, 429...)",
    )
    parser.add_argument(
        "--hang-rate",
        type=float,
        default=d.hang_rate,
        help="share of requests that never answer in time",
    )
    parser.add_argument("--model", default=d.model, help="model name in replies")
    parser.add_argument("--stream-chunks", type=int, default=d.stream_chunks)
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    cfg = SimConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        dist=args.dist,
        completion_tokens=args.completion_tokens,
        failure_rate=args.failure_rate,
        failure_status=args.failure_status,
        hang_rate=args.hang_rate,
        model=args.model,
        stream_chunks=args.stream_chunks,
        seed=args.seed,
    )
    cfg.check()
    return cfg


def serve(host: str, port: int, config: SimConfig | None = None) -> None:
    """Run the simulator until interrupted."""
    import uvicorn

    uvicorn.run(
        SimulatorApp(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )


def run(args: argparse.Namespace) -> None:
    serve(args.host, args.port, config_from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aimesh sim",
        description="OpenAI-compatible upstream SIMULATOR (not a model) for tests and demos.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as e:
        parser.error(str(e))
    return 0
