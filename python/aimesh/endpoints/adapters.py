"""Upstream adapters: how a message becomes an HTTP request to an endpoint
and how the answer becomes a result and a token count."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from aimesh.endpoints.base import ClientGone, DeliveryRequest, EndpointFailure, StreamSink
from aimesh.models import EndpointMetrics, estimate_tokens
from aimesh.tracing import child_traceparent


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Adapter(Protocol):
    """How one ``kind`` of endpoint is called."""

    async def call(
        self,
        client: aiohttp.ClientSession,
        endpoint: EndpointMetrics,
        request: DeliveryRequest,
        timeout: float,
    ) -> tuple[bytes, int]:
        """Send ``request``; answer ``(result, tokens_used)`` or raise
        :class:`EndpointFailure`."""
        ...


def _auth_headers(endpoint: EndpointMetrics) -> dict[str, str]:
    if not endpoint.api_key_env:
        return {}
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        # Name the variable, never a value.
        raise EndpointFailure(
            "missing_api_key",
            f"environment variable {endpoint.api_key_env} (api_key_env of "
            f"{endpoint.endpoint_id}) is not set",
            retryable=False,
        )
    return {"authorization": f"Bearer {key}"}


def _headers(endpoint: EndpointMetrics, request: DeliveryRequest, ctype: str) -> dict[str, str]:
    """Headers of an upstream request: content type, the key (if any), the
    message id (an idempotency hint for upstreams) and the trace id."""
    headers = {"content-type": ctype, **_auth_headers(endpoint)}
    headers["x-aimesh-message-id"] = header_value(request.message_id)
    if request.trace_id:
        headers["x-aimesh-trace-id"] = header_value(request.trace_id)
        parent = child_traceparent(request.trace_id)
        if parent:
            headers["traceparent"] = parent
    headers.update(request.headers)
    return headers


def header_value(value: str) -> str:
    """A client-chosen id as an HTTP header value: as it is when it is plain
    visible ASCII, else percent-encoded (UTF-8), so that no id can inject a
    header or make the upstream request fail."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe="")


async def _post(
    client: aiohttp.ClientSession,
    url: str,
    content: bytes,
    headers: dict[str, str],
    timeout: float,
) -> UpstreamResponse:
    try:
        async with client.post(
            url, data=content, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            response = UpstreamResponse(r.status, r.headers, await r.read())
    except asyncio.TimeoutError:
        raise EndpointFailure(
            "upstream_timeout", f"no answer within {timeout:.3f}s", retryable=True
        ) from None
    except aiohttp.ClientError as e:
        raise EndpointFailure(
            "upstream_unreachable", f"{type(e).__name__}: {e}", retryable=True
        ) from None
    _check_status(response)
    return response


def _check_status(response: UpstreamResponse) -> None:
    """429 and 5xx are retryable failures; another 4xx means the request
    itself is bad."""
    if response.status == 429 or response.status >= 500:
        retry_after = None
        header = response.headers.get("retry-after")
        if header:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        raise EndpointFailure(
            "upstream_error",
            f"upstream answered {response.status}",
            retryable=True,
            status=response.status,
            retry_after=retry_after,
        )
    if response.status >= 400:
        raise EndpointFailure(
            "upstream_rejected",
            f"upstream answered {response.status}: {response.text[:200]}",
            retryable=False,
            status=response.status,
        )


def chat_url(url: str) -> str:
    """The chat-completions URL of an OpenAI-compatible base URL."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def chat_body(endpoint: EndpointMetrics, payload: bytes) -> dict[str, Any]:
    """The chat request for a payload: a JSON chat body is used as is (its
    ``model`` replaced by the endpoint's ``model`` when one is configured,
    filled from the route group when missing); anything else becomes one
    user message."""
    body: dict[str, Any] | None = None
    if payload[:1] == b"{":
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
            body = parsed
    if body is None:
        body = {"messages": [{"role": "user", "content": payload.decode("utf-8", "replace")}]}
    if endpoint.model:
        body["model"] = endpoint.model
    elif not body.get("model"):
        body["model"] = endpoint.group or "default"
    return body


class OpenAIAdapter:
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama,
    llama.cpp, the bundled simulator)."""

    async def call(
        self,
        client: aiohttp.ClientSession,
        endpoint: EndpointMetrics,
        request: DeliveryRequest,
        timeout: float,
    ) -> tuple[bytes, int]:
        headers = _headers(endpoint, request, "application/json")
        body = orjson.dumps(chat_body(endpoint, request.payload))
        response = await _post(client, chat_url(endpoint.url), body, headers, timeout)
        try:
            data = orjson.loads(response.content)
            tokens = int(data["usage"]["total_tokens"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            if not response.content:
                raise EndpointFailure(
                    "upstream_invalid_response", "empty answer", retryable=True
                ) from None
            tokens = estimate_tokens(len(request.payload) + len(response.content))
        return response.content, tokens

    async def stream(
        self,
        client: aiohttp.ClientSession,
        endpoint: EndpointMetrics,
        request: DeliveryRequest,
        timeout: float,
        sink: StreamSink,
    ) -> tuple[bytes, int]:
        """Stream the chat completion event by event into ``sink``; answer
        every event sent (for replay) and the tokens used (the stream's
        ``usage``, which is always requested upstream; estimated when the
        upstream gives none). A failure before the first event may fall back;
        after it, it may not."""
        body = chat_body(endpoint, request.payload)
        options = body.get("stream_options")
        client_wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        body["stream"] = True
        body["stream_options"] = {**(options or {}), "include_usage": True}
        headers = _headers(endpoint, request, "application/json")
        sent = bytearray()
        content_chars = 0
        tokens: int | None = None

        def used() -> int:
            return tokens or estimate_tokens(len(request.payload)) + max(1, content_chars // 4)

        # A total timeout would cut long answers: bound connecting and each
        # wait for the next bytes instead.
        limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        try:
            async with client.post(
                chat_url(endpoint.url), data=orjson.dumps(body), headers=headers, timeout=limits
            ) as r:
                if r.status >= 400:
                    _check_status(UpstreamResponse(r.status, r.headers, await r.read()))
                async for line in r.content:
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, other SSE fields
                    data = line[5:].strip()
                    if data != b"[DONE]":
                        try:
                            event = orjson.loads(data)
                        except orjson.JSONDecodeError:
                            raise EndpointFailure(
                                "upstream_invalid_response",
                                "a stream event is not JSON",
                                retryable=not sent,
                                tokens_used=used(),
                            ) from None
                        if isinstance(event.get("usage"), dict):
                            tokens = int(event["usage"].get("total_tokens") or 0) or None
                        for choice in event.get("choices") or ():
                            delta = choice.get("delta") or {}
                            content_chars += len(delta.get("content") or "")
                        if not event.get("choices") and not client_wants_usage:
                            continue  # the usage-only event AiMesh asked for itself
                    chunk = b"data: " + data + b"\n\n"
                    try:
                        await sink(chunk)
                    except ClientGone:
                        raise EndpointFailure(
                            "client_disconnected",
                            "the client went away mid-stream",
                            retryable=False,
                            tokens_used=used(),
                        ) from None
                    sent += chunk
        except (asyncio.TimeoutError, aiohttp.ClientError) as e:
            raise EndpointFailure(
                "upstream_timeout"
                if isinstance(e, asyncio.TimeoutError)
                else "upstream_unreachable",
                f"{type(e).__name__}: {e}",
                retryable=not sent,
                tokens_used=used() if sent else 0,
            ) from None
        if not sent:
            raise EndpointFailure("upstream_invalid_response", "empty stream", retryable=True)
        return bytes(sent), used()


class HttpAdapter:
    """POST the payload bytes to the endpoint URL; the body is the result;
    tokens from ``x-tokens-used`` or estimated."""

    async def call(
        self,
        client: aiohttp.ClientSession,
        endpoint: EndpointMetrics,
        request: DeliveryRequest,
        timeout: float,
    ) -> tuple[bytes, int]:
        headers = _headers(endpoint, request, "application/octet-stream")
        response = await _post(client, endpoint.url, request.payload, headers, timeout)
        header = response.headers.get("x-tokens-used", "")
        tokens = (
            int(header)
            if header.isdigit()
            else estimate_tokens(len(request.payload) + len(response.content))
        )
        return response.content, tokens


#: Adapters by endpoint ``kind``.
ADAPTERS: dict[str, Adapter] = {"openai": OpenAIAdapter(), "http": HttpAdapter()}
