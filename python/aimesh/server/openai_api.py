"""The OpenAI-compatible front door: ``POST /v1/chat/completions`` and
``GET /v1/models``.

Agent code written for the OpenAI API points its client at AiMesh
(``base_url=http://aimesh:9000/v1``) and changes nothing else. ``model``
names a route group; the request body is the message payload, so budgets,
rate limits, dedup, routing, fallback and metrics are the ones of
``/messages`` (one pipeline: :meth:`AiMesh.process_message`). With
``stream: true`` the upstream's Server-Sent Events are relayed as they
arrive; fallback happens only before the first event.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aimesh.endpoints import ClientGone
from aimesh.errors import AiMeshError, NotFoundError, ValidationError
from aimesh.models import Acknowledgment, AckStatus, AIMessage, estimate_tokens
from aimesh.server.app import (
    HttpApi,
    _wrap,
    parse_json,
    read_body,
    retry_after_header,
)
from aimesh.tracing import new_trace_id, trace_id_from

log = logging.getLogger("aimesh.server")

#: Agent of requests that name none (header ``X-AiMesh-Agent`` or ``user``).
DEFAULT_AGENT = "default"
#: Completion tokens reserved when a request sets no ``max_tokens``.
DEFAULT_COMPLETION_TOKENS = 256
_AGENT = re.compile(r"^[a-z0-9_-]{1,128}$")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class OpenAIFrontDoor:
    """Routes of the OpenAI-compatible API over the HTTP API's Mesh."""

    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.mesh = api.mesh
        # Streams whose client left keep running until they settle.
        self._running: set[asyncio.Task[Acknowledgment]] = set()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", _wrap(self.chat, _error_response), methods=["POST"]),
            Route("/v1/models", _wrap(self.models, _error_response), methods=["GET"]),
        ]

    async def models(self, request: Request) -> Response:
        """The route groups the caller's tier may use."""
        tier = self.mesh.tenants.tier_of(self.api.tenant_of(request))
        data = [
            {"id": g, "object": "model", "created": 0, "owned_by": "aimesh"}
            for g in sorted(self.mesh.router.groups())
            if g and (tier is None or tier.allows_group(g))
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)

    async def chat(self, request: Request) -> Response:
        tenant_id = self.api.tenant_of(request)
        body = await read_body(request, self.mesh.config.max_body_bytes)
        data = parse_json(body)
        msg = self._message(request, body, data)
        msg.tenant_id = tenant_id
        if data.get("stream") is True:
            return await self._stream(msg)
        return _answer(await self.mesh.process_message(msg))

    def _message(self, request: Request, body: bytes, data: Any) -> AIMessage:
        if not isinstance(data, dict):
            raise ValidationError("invalid_request", "the body must be a JSON object")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise ValidationError("invalid_request", "'model' (a route group) is required")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValidationError("invalid_request", "'messages' must be a non-empty list")
        if model not in self.mesh.router.groups():
            raise NotFoundError("model_not_found", f"no endpoints serve model {model!r}")
        limit = data.get("max_completion_tokens", data.get("max_tokens"))
        if limit is not None and (not isinstance(limit, int) or limit <= 0):
            raise ValidationError("invalid_request", "max_tokens must be a positive integer")
        user = data.get("user")
        agent = request.headers.get("x-aimesh-agent") or (
            user if isinstance(user, str) and _AGENT.match(user) else DEFAULT_AGENT
        )
        return AIMessage(
            agent_id=agent,
            payload=body,
            # Reserve the prompt plus the most the answer may cost.
            estimated_cost_tokens=estimate_tokens(len(body)) + (limit or DEFAULT_COMPLETION_TOKENS),
            metadata={"model": model},
            dedup_context=request.headers.get("x-aimesh-dedup-context", ""),
            trace_id=trace_id_from(request.headers.get("traceparent")) or new_trace_id(),
        )

    async def _stream(self, msg: AIMessage) -> Response:
        events: asyncio.Queue[bytes] = asyncio.Queue()
        gone = False

        async def sink(event: bytes) -> None:
            if gone:
                raise ClientGone
            events.put_nowait(event)

        task = asyncio.create_task(self.mesh.process_message(msg, sink=sink))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            # Nothing is sent before the first event or the outcome: a refusal
            # or an upstream failure is still an HTTP error status here.
            first = await _next_event(events, task)
        except BaseException:
            gone = True
            raise
        if first is None:
            ack = task.result()  # a refusal raises here: a 4xx like /messages
            if ack.status is AckStatus.DUPLICATE:
                return Response(ack.result, media_type=_SSE, headers=_headers(ack))
            return _answer(ack)

        async def relay() -> AsyncIterator[bytes]:
            nonlocal gone
            try:
                event: bytes | None = first
                while event is not None:
                    yield event
                    event = await _next_event(events, task)
                ack = task.result()
                if ack.status is AckStatus.FAILED:
                    # Too late for a status code: the error is the last event.
                    err = {"error": {"message": ack.error, "code": ack.error_code}}
                    yield b"data: " + orjson.dumps(err) + b"\n\n"
            finally:
                # A client that left makes the next upstream event stop the
                # delivery, which then settles the budget with what was used.
                gone = True

        return StreamingResponse(relay(), media_type=_SSE, headers=_SSE_HEADERS)


async def _next_event(
    events: asyncio.Queue[bytes], task: asyncio.Task[Acknowledgment]
) -> bytes | None:
    """The next relayed event, or None once the delivery finished and every
    event was taken."""
    while True:
        if not events.empty():
            return events.get_nowait()
        if task.done():
            return None
        getter = asyncio.ensure_future(events.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()


_JSON = "application/json"
_SSE = "text/event-stream"


def _headers(ack: Acknowledgment) -> dict[str, str]:
    return {
        "x-aimesh-message-id": ack.original_message_id,
        "x-aimesh-endpoint": ack.endpoint_id,
        "x-aimesh-status": ack.status.value,
        "x-aimesh-tokens": str(ack.tokens_used),
        "x-aimesh-trace-id": ack.trace_id,
    }


def _answer(ack: Acknowledgment) -> Response:
    """The upstream's completion as it answered it, or the failure."""
    if ack.status in (AckStatus.SUCCESS, AckStatus.DUPLICATE):
        return Response(ack.result, media_type=_JSON, headers=_headers(ack))
    err = AiMeshError(ack.error_code or "upstream_failed", ack.error)
    err.status = 504 if ack.error_code in ("deadline_exceeded", "upstream_timeout") else 502
    return _error_response(err, _headers(ack))


def _error_response(err: AiMeshError, headers: dict[str, str] | None = None) -> Response:
    """OpenAI's error shape (``message``, ``type``, ``code``, ``param``), so
    OpenAI clients raise their usual exceptions; ``code`` is AiMesh's."""
    body = {
        "error": {
            "message": err.message,
            "type": "invalid_request_error" if err.status < 500 else "api_error",
            "code": err.code,
            "param": None,
        }
    }
    headers = dict(headers or {})
    if err.retry_after is not None:
        headers["retry-after"] = retry_after_header(err.retry_after)
    return Response(orjson.dumps(body), status_code=err.status, media_type=_JSON, headers=headers)
