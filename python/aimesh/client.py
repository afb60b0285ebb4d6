"""Python SDK: :class:`AiMeshClient` (sync) and :class:`AsyncAiMeshClient`.

Both have the same methods; each call is described once (a :class:`_Call`:
method, path, body and how to read the answer) and executed by the client's
own httpx transport. HTTP errors become :mod:`aimesh.errors` exceptions with
the server's machine-readable ``code`` (``RateLimitError.retry_after`` comes
from the Retry-After header).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import orjson

from aimesh import errors
from aimesh.models import Acknowledgment, AIMessage, BudgetInfo, EndpointMetrics

if TYPE_CHECKING:
    from aimesh.quic.client import QuicClient

T = TypeVar("T")

_STATUS_ERRORS: dict[int, type[errors.AiMeshError]] = {
    400: errors.ValidationError,
    401: errors.AuthenticationError,
    402: errors.BudgetExceededError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.PayloadTooLargeError,
    429: errors.RateLimitError,
    502: errors.UpstreamError,
    503: errors.ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> errors.AiMeshError:
    """Map an error response to the matching exception."""
    code, message = f"http_{response.status_code}", response.reason_phrase
    details: dict[str, Any] = {}
    try:
        body = response.json()
        err = body.get("error", {}) if isinstance(body, dict) else {}
        code = err.get("code", code)
        message = err.get("message", message)
        details = err.get("details") or {}
    except ValueError:
        pass
    retry_after = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    cls = _STATUS_ERRORS.get(response.status_code, errors.AiMeshError)
    if code == "queue_full":
        cls = errors.QueueFullError
    elif code in ("no_endpoint_available",):
        cls = errors.RoutingError
    exc = cls(code, message, details=details, retry_after=retry_after)
    exc.status = response.status_code
    return exc


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, str] | None = None


def _ack(r: httpx.Response) -> Acknowledgment:
    return Acknowledgment.from_json_dict(r.json())


def _acks(r: httpx.Response) -> list[Acknowledgment]:
    return [Acknowledgment.from_json_dict(a) for a in r.json()["acknowledgments"]]


def _budget(r: httpx.Response) -> BudgetInfo:
    return BudgetInfo.from_json_dict(r.json())


def _json(r: httpx.Response) -> Any:
    return r.json()


def _none(r: httpx.Response) -> None:
    return None


def _text(r: httpx.Response) -> str:
    return r.text


def _seg(value: str) -> str:
    """One URL path segment, quoted (a ``/`` or ``?`` in an id stays in it)."""
    return quote(value, safe="")


class _Calls:
    """Every API call, described once for both clients."""

    @staticmethod
    def send_message(message: AIMessage, mode: str) -> _Call[Acknowledgment]:
        params = {"mode": mode} if mode != "sync" else None
        return _Call("POST", "/messages", _ack, message.to_json_dict(), params)

    @staticmethod
    def send_batch(messages: Sequence[AIMessage], mode: str) -> _Call[list[Acknowledgment]]:
        params = {"mode": mode} if mode != "sync" else None
        body = {"messages": [m.to_json_dict() for m in messages]}
        return _Call("POST", "/messages/batch", _acks, body, params)

    @staticmethod
    def get_message(message_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/messages/{message_id}", _json)

    @staticmethod
    def route(message: AIMessage) -> _Call[dict[str, Any]]:
        return _Call("POST", "/route", _json, message.to_json_dict())

    @staticmethod
    def register_endpoint(endpoint: EndpointMetrics) -> _Call[dict[str, Any]]:
        return _Call("POST", "/endpoints", _json, endpoint.to_json_dict())

    @staticmethod
    def list_endpoints() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/endpoints", lambda r: r.json()["endpoints"])

    @staticmethod
    def get_endpoint(endpoint_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/endpoints/{endpoint_id}", _json)

    @staticmethod
    def remove_endpoint(endpoint_id: str) -> _Call[None]:
        return _Call("DELETE", f"/endpoints/{endpoint_id}", _none)

    @staticmethod
    def set_budget(
        agent_id: str, tokens: int, reset_at: int | None, period_s: int | None
    ) -> _Call[BudgetInfo]:
        body: dict[str, Any] = {"agent_id": agent_id, "tokens": tokens}
        if reset_at is not None:
            body["reset_at"] = reset_at
        if period_s is not None:
            body["period_s"] = period_s
        return _Call("POST", "/budgets", _budget, body)

    @staticmethod
    def get_budget(agent_id: str) -> _Call[BudgetInfo]:
        return _Call("GET", f"/budgets/{agent_id}", _budget)

    @staticmethod
    def reset_budget(agent_id: str) -> _Call[BudgetInfo]:
        return _Call("POST", f"/budgets/{agent_id}/reset", _budget)

    @staticmethod
    def create_tenant(tenant_id: str, tier: str, name: str) -> _Call[dict[str, Any]]:
        body = {"tenant_id": tenant_id, "tier": tier, "name": name}
        return _Call("POST", "/tenants", _json, body)

    @staticmethod
    def list_tenants() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/tenants", lambda r: r.json()["tenants"])

    @staticmethod
    def get_tenant(tenant_id: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/tenants/{_seg(tenant_id)}", _json)

    @staticmethod
    def update_tenant(tenant_id: str, tier: str | None, name: str | None) -> _Call[dict[str, Any]]:
        body: dict[str, Any] = {}
        if tier is not None:
            body["tier"] = tier
        if name is not None:
            body["name"] = name
        return _Call("PATCH", f"/tenants/{_seg(tenant_id)}", _json, body)

    @staticmethod
    def disable_tenant(tenant_id: str) -> _Call[dict[str, Any]]:
        return _Call("DELETE", f"/tenants/{_seg(tenant_id)}", _json)

    @staticmethod
    def create_key(tenant_id: str) -> _Call[dict[str, Any]]:
        return _Call("POST", f"/tenants/{_seg(tenant_id)}/keys", _json)

    @staticmethod
    def rotate_key(tenant_id: str) -> _Call[dict[str, Any]]:
        return _Call("POST", f"/tenants/{_seg(tenant_id)}/rotate-key", _json)

    @staticmethod
    def revoke_key(tenant_id: str, key_id: str) -> _Call[dict[str, Any]]:
        return _Call("DELETE", f"/tenants/{_seg(tenant_id)}/keys/{_seg(key_id)}", _json)

    @staticmethod
    def get_stats() -> _Call[dict[str, Any]]:
        return _Call("GET", "/stats", _json)

    @staticmethod
    def get_metrics() -> _Call[str]:
        return _Call("GET", "/metrics", _text)

    @staticmethod
    def health() -> _Call[dict[str, Any]]:
        return _Call("GET", "/health", _json)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": "aimesh-python"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _finish(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise error_from_response(response)
    return call.parse(response)


def _request_kwargs(call: _Call[Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"params": call.params}
    if call.json is not None:
        kwargs["content"] = orjson.dumps(call.json)
        kwargs["headers"] = {"content-type": "application/json"}
    return kwargs


def _quic_client(
    base_url: str,
    quic_addr: str | None,
    api_key: str | None,
    cafile: str | None,
    verify: bool,
    timeout: float,
) -> QuicClient:
    from aimesh.config import parse_addr
    from aimesh.quic.client import QuicClient

    if quic_addr:
        host, port = parse_addr(quic_addr)
    else:  # the HTTP host, the default QUIC port
        host, port = urlsplit(base_url).hostname or "127.0.0.1", 9001
    return QuicClient(host, port, api_key=api_key, cafile=cafile, verify=verify, timeout=timeout)


def _async_mode(mode: str) -> bool:
    if mode not in ("sync", "async"):
        raise errors.ValidationError("invalid_mode", "mode must be sync or async")
    return mode == "async"


def _check_transport(transport: str) -> None:
    if transport not in ("http", "quic"):
        raise ValueError('transport must be "http" or "quic"')


class _LoopThread:
    """An event loop on a daemon thread, so the sync client can drive the
    async QUIC client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="aimesh-quic", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class AiMeshClient:
    """Synchronous client of an AiMesh server.

    >>> client = AiMeshClient("http://localhost:9000")
    >>> ack = client.send_message(Message(agent_id="my-agent", payload=b"Hello"))

    With ``transport="quic"``, messages and batches travel over QUIC
    (``quic_addr``, default: the HTTP host on port 9001; ``cafile`` pins the
    server's certificate); every other call stays on HTTP.
    """

    def __init__(
        self,
        base_url: str = "http://localhost:9000",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        http_client: httpx.Client | None = None,
        transport: str = "http",
        quic_addr: str | None = None,
        cafile: str | None = None,
        verify: bool = True,
    ) -> None:
        _check_transport(transport)
        self._http = http_client or httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )
        self._quic: QuicClient | None = None
        self._loop: _LoopThread | None = None
        if transport == "quic":
            self._quic = _quic_client(base_url, quic_addr, api_key, cafile, verify, timeout)
            self._loop = _LoopThread()

    def _do(self, call: _Call[T]) -> T:
        return _finish(call, self._http.request(call.method, call.path, **_request_kwargs(call)))

    def send_message(self, message: AIMessage, *, mode: str = "sync") -> Acknowledgment:
        """Send one message; ``mode="async"`` answers ``received`` once the
        message is on disk."""
        if self._quic is not None and self._loop is not None:
            return self._loop.run(self._quic.send(message, async_mode=_async_mode(mode)))
        return self._do(_Calls.send_message(message, mode))

    def send_batch(
        self, messages: Sequence[AIMessage], *, mode: str = "sync"
    ) -> list[Acknowledgment]:
        """Send many messages; one ack per message, in order."""
        if self._quic is not None and self._loop is not None:
            return self._loop.run(self._quic.send_batch(messages, async_mode=_async_mode(mode)))
        return self._do(_Calls.send_batch(messages, mode))

    def get_message(self, message_id: str) -> dict[str, Any]:
        return self._do(_Calls.get_message(message_id))

    def route(self, message: AIMessage) -> dict[str, Any]:
        """Dry-run routing decision for ``message``."""
        return self._do(_Calls.route(message))

    def register_endpoint(self, endpoint: EndpointMetrics) -> dict[str, Any]:
        return self._do(_Calls.register_endpoint(endpoint))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return self._do(_Calls.list_endpoints())

    def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return self._do(_Calls.get_endpoint(endpoint_id))

    def remove_endpoint(self, endpoint_id: str) -> None:
        return self._do(_Calls.remove_endpoint(endpoint_id))

    def set_budget(
        self, agent_id: str, tokens: int, reset_at: int | None = None, period_s: int | None = None
    ) -> BudgetInfo:
        return self._do(_Calls.set_budget(agent_id, tokens, reset_at, period_s))

    def get_budget(self, agent_id: str) -> BudgetInfo:
        return self._do(_Calls.get_budget(agent_id))

    def reset_budget(self, agent_id: str) -> BudgetInfo:
        return self._do(_Calls.reset_budget(agent_id))

    def create_tenant(self, tenant_id: str, tier: str = "free", name: str = "") -> dict[str, Any]:
        """Create a tenant (admin key). The answer holds its first key in
        ``api_key``: it is shown this once and never again."""
        return self._do(_Calls.create_tenant(tenant_id, tier, name))

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant (admin key), without keys."""
        return self._do(_Calls.list_tenants())

    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        """A tenant with its tier limits, keys (by prefix only), quota and
        usage (admin key, or the tenant's own key)."""
        return self._do(_Calls.get_tenant(tenant_id))

    def update_tenant(
        self, tenant_id: str, *, tier: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """Change a tenant's tier and/or name (admin key)."""
        return self._do(_Calls.update_tenant(tenant_id, tier, name))

    def disable_tenant(self, tenant_id: str) -> dict[str, Any]:
        """Disable a tenant (admin key): every key of it is refused at once."""
        return self._do(_Calls.disable_tenant(tenant_id))

    def create_key(self, tenant_id: str) -> dict[str, Any]:
        """Another key for the tenant (``api_key``, ``key_id``); the others
        stay valid. The key is shown this once."""
        return self._do(_Calls.create_key(tenant_id))

    def rotate_key(self, tenant_id: str) -> dict[str, Any]:
        """A new key for the tenant; every older key is revoked (their ids
        in ``revoked``). The key is shown this once."""
        return self._do(_Calls.rotate_key(tenant_id))

    def revoke_key(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        """Revoke one key of the tenant, at once."""
        return self._do(_Calls.revoke_key(tenant_id, key_id))

    def get_stats(self) -> dict[str, Any]:
        return self._do(_Calls.get_stats())

    def get_metrics(self) -> str:
        """Prometheus text exposition."""
        return self._do(_Calls.get_metrics())

    def health(self) -> dict[str, Any]:
        return self._do(_Calls.health())

    def close(self) -> None:
        self._http.close()
        if self._quic is not None and self._loop is not None:
            self._loop.run(self._quic.close())
            self._loop.close()
            self._quic = self._loop = None

    def __enter__(self) -> AiMeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAiMeshClient:
    """Asynchronous client with the same methods (and the same
    ``transport="quic"`` option) as :class:`AiMeshClient`."""

    def __init__(
        self,
        base_url: str = "http://localhost:9000",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
        transport: str = "http",
        quic_addr: str | None = None,
        cafile: str | None = None,
        verify: bool = True,
    ) -> None:
        _check_transport(transport)
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )
        self._quic = (
            _quic_client(base_url, quic_addr, api_key, cafile, verify, timeout)
            if transport == "quic"
            else None
        )

    async def _do(self, call: _Call[T]) -> T:
        response = await self._http.request(call.method, call.path, **_request_kwargs(call))
        return _finish(call, response)

    async def send_message(self, message: AIMessage, *, mode: str = "sync") -> Acknowledgment:
        if self._quic is not None:
            return await self._quic.send(message, async_mode=_async_mode(mode))
        return await self._do(_Calls.send_message(message, mode))

    async def send_batch(
        self, messages: Sequence[AIMessage], *, mode: str = "sync"
    ) -> list[Acknowledgment]:
        if self._quic is not None:
            return await self._quic.send_batch(messages, async_mode=_async_mode(mode))
        return await self._do(_Calls.send_batch(messages, mode))

    async def get_message(self, message_id: str) -> dict[str, Any]:
        return await self._do(_Calls.get_message(message_id))

    async def route(self, message: AIMessage) -> dict[str, Any]:
        return await self._do(_Calls.route(message))

    async def register_endpoint(self, endpoint: EndpointMetrics) -> dict[str, Any]:
        return await self._do(_Calls.register_endpoint(endpoint))

    async def list_endpoints(self) -> list[dict[str, Any]]:
        return await self._do(_Calls.list_endpoints())

    async def get_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        return await self._do(_Calls.get_endpoint(endpoint_id))

    async def remove_endpoint(self, endpoint_id: str) -> None:
        return await self._do(_Calls.remove_endpoint(endpoint_id))

    async def set_budget(
        self, agent_id: str, tokens: int, reset_at: int | None = None, period_s: int | None = None
    ) -> BudgetInfo:
        return await self._do(_Calls.set_budget(agent_id, tokens, reset_at, period_s))

    async def get_budget(self, agent_id: str) -> BudgetInfo:
        return await self._do(_Calls.get_budget(agent_id))

    async def reset_budget(self, agent_id: str) -> BudgetInfo:
        return await self._do(_Calls.reset_budget(agent_id))

    async def create_tenant(
        self, tenant_id: str, tier: str = "free", name: str = ""
    ) -> dict[str, Any]:
        return await self._do(_Calls.create_tenant(tenant_id, tier, name))

    async def list_tenants(self) -> list[dict[str, Any]]:
        return await self._do(_Calls.list_tenants())

    async def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        return await self._do(_Calls.get_tenant(tenant_id))

    async def update_tenant(
        self, tenant_id: str, *, tier: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        return await self._do(_Calls.update_tenant(tenant_id, tier, name))

    async def disable_tenant(self, tenant_id: str) -> dict[str, Any]:
        return await self._do(_Calls.disable_tenant(tenant_id))

    async def create_key(self, tenant_id: str) -> dict[str, Any]:
        return await self._do(_Calls.create_key(tenant_id))

    async def rotate_key(self, tenant_id: str) -> dict[str, Any]:
        return await self._do(_Calls.rotate_key(tenant_id))

    async def revoke_key(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        return await self._do(_Calls.revoke_key(tenant_id, key_id))

    async def get_stats(self) -> dict[str, Any]:
        return await self._do(_Calls.get_stats())

    async def get_metrics(self) -> str:
        return await self._do(_Calls.get_metrics())

    async def health(self) -> dict[str, Any]:
        return await self._do(_Calls.health())

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._quic is not None:
            await self._quic.close()

    async def __aenter__(self) -> AsyncAiMeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
