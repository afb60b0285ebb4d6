"""The HTTP API: a thin Starlette adapter over :class:`aimesh.mesh.AiMesh`.

JSON (hex payloads) and ``application/x-protobuf`` carry the same messages.
Every error is ``{"error": {"code", "message"}}`` with a 4xx/5xx status;
bodies over the limit are refused before they are read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from aimesh import _native
from aimesh.auth import Authenticator, Principal
from aimesh.errors import (
    AiMeshError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestTimeoutError,
    ValidationError,
)
from aimesh.mesh import AiMesh
from aimesh.models import (
    Acknowledgment,
    AIMessage,
    BudgetInfo,
    EndpointMetrics,
    parse_budget_request,
)
from aimesh.router import decision_to_json
from aimesh.server import protobuf as pb
from aimesh.server.headers import SecurityHeadersMiddleware
from aimesh.server.openapi import openapi_spec
from aimesh.tracing import trace_id_from

log = logging.getLogger("aimesh.server")

PROTOBUF = "application/x-protobuf"
#: An admin request acting in a tenant names it in this header.
TENANT_HEADER = "x-aimesh-tenant"
#: Body limits of the admin routes (their bodies are small objects).
ENDPOINT_BODY_LIMIT = 64 * 1024
BUDGET_BODY_LIMIT = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; never tell a client to retry at once."""
    return str(max(1, int(-(-seconds // 1))))


def error_response(err: AiMeshError) -> Response:
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = retry_after_header(err.retry_after)
    return ORJSONResponse(err.to_dict(), status_code=err.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it (413) as soon as it exceeds ``limit`` —
    from Content-Length if given, else while streaming."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ValidationError("invalid_content_length", "Content-Length must be an integer")
        if int(length) > limit:
            raise PayloadTooLargeError(
                "body_too_large", f"request body of {length} bytes exceeds {limit} bytes"
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError("body_too_large", f"request body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the server cut a body too slow to finish
        # (the protocol has already answered 408): nothing to answer here.
        raise RequestTimeoutError("body_incomplete", "the request body did not arrive") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise ValidationError("empty_body", "a JSON body is required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValidationError("invalid_json", f"body is not valid JSON: {e}") from None


def is_protobuf(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == PROTOBUF


def wants_protobuf(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return PROTOBUF in accept or (is_protobuf(request) and "json" not in accept)


class HttpApi:
    """Routes of the HTTP API bound to one Mesh."""

    def __init__(self, mesh: AiMesh, *, admin_open: bool) -> None:
        self.mesh = mesh
        self.auth = Authenticator(
            mesh.config.admin_key, admin_open=admin_open, registry=mesh.tenants
        )

    # -- auth -------------------------------------------------------------------

    def require_admin(self, request: Request) -> Principal:
        return self.auth.require_admin(_bearer(request))

    def caller(self, request: Request) -> Principal:
        """The authenticated caller (401 without a valid key when keys are
        required)."""
        return self.auth.identify(_bearer(request))

    def tenant_of(self, request: Request, principal: Principal | None = None) -> str:
        """The tenant a request acts in: the key's tenant, or for the admin
        the one named by ``X-AiMesh-Tenant`` (default: the default tenant).
        ``principal``: the caller, when already identified."""
        principal = principal or self.caller(request)
        named = request.headers.get(TENANT_HEADER)
        if principal.tenant_id:
            if named is not None and named != principal.tenant_id:
                raise PermissionDeniedError(
                    "tenant_mismatch", f"a tenant key acts only in its own tenant ({TENANT_HEADER})"
                )
            return principal.tenant_id
        if named:
            if not principal.admin:
                raise PermissionDeniedError(
                    "admin_only", f"only the admin key may name a tenant with {TENANT_HEADER}"
                )
            self.mesh.tenants.get(named)
            return named
        return ""

    def budget_scope(self, request: Request) -> str:
        """Budgets: a tenant key manages its own agents'; the default
        tenant's need the admin key (or an open loopback server)."""
        principal = self.caller(request)
        tenant_id = self.tenant_of(request, principal)
        if not principal.tenant_id:
            self.auth.ensure_admin(principal)
        return tenant_id

    # -- messages ---------------------------------------------------------------

    async def read_message(self, request: Request) -> AIMessage:
        """The request's message, in the caller's tenant."""
        tenant_id = self.tenant_of(request)
        body = await read_body(request, self.mesh.config.max_body_bytes)
        if is_protobuf(request):
            msg = pb.message_from_protobuf(body)
        else:
            msg = AIMessage.from_json_dict(parse_json(body))
        if not msg.trace_id:
            # A W3C trace started by the agent continues through AiMesh.
            trace_id = trace_id_from(request.headers.get("traceparent"))
            if trace_id:
                msg = replace(msg, trace_id=trace_id)
        msg.tenant_id = tenant_id
        return msg

    def ack_response(self, request: Request, ack: Acknowledgment, status: int = 200) -> Response:
        if wants_protobuf(request):
            return Response(pb.ack_to_protobuf(ack), status_code=status, media_type=PROTOBUF)
        return ORJSONResponse(ack.to_json_dict(), status_code=status)

    async def post_message(self, request: Request) -> Response:
        msg = await self.read_message(request)
        mode = request.query_params.get("mode", "sync")
        if mode == "async":
            ack = await self.mesh.submit(msg)
            return self.ack_response(request, ack, status=202)
        if mode != "sync":
            raise ValidationError("invalid_mode", "mode must be sync or async")
        ack = await self.mesh.process_message(msg)
        return self.ack_response(request, ack)

    async def post_batch(self, request: Request) -> Response:
        tenant_id = self.tenant_of(request)
        body = await read_body(request, self.mesh.config.max_batch_body_bytes)
        mode = request.query_params.get("mode", "sync")
        if mode not in ("sync", "async"):
            raise ValidationError("invalid_mode", "mode must be sync or async")
        limit = self.mesh.config.max_batch_messages
        too_large = ValidationError("batch_too_large", f"a batch holds at most {limit} messages")
        if is_protobuf(request):
            # Decoded natively (payloads not copied) and screened in one call.
            batch = _native.decode_batch(body)
            if len(batch) > limit:
                raise too_large
            acks = await self.mesh.process_buffer(
                batch, async_mode=mode == "async", tenant_id=tenant_id
            )
        else:
            data = parse_json(body)
            if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
                raise ValidationError("invalid_body", 'body must be {"messages": [...]}')
            if len(data["messages"]) > limit:
                raise too_large
            messages = [AIMessage.from_json_dict(m) for m in data["messages"]]
            acks = await self.mesh.process_batch(
                messages, async_mode=mode == "async", tenant_id=tenant_id
            )
        if wants_protobuf(request):
            return Response(pb.acks_to_protobuf(acks), media_type=PROTOBUF)
        return ORJSONResponse({"acknowledgments": [a.to_json_dict() for a in acks]})

    async def get_message(self, request: Request) -> Response:
        tenant_id = self.tenant_of(request)
        message_id = request.path_params["message_id"]
        return ORJSONResponse(await self.mesh.get_message(message_id, tenant_id=tenant_id))

    async def post_route(self, request: Request) -> Response:
        """Dry run within the caller's tenant (its tier's route groups)."""
        msg = await self.read_message(request)
        decision = self.mesh.route(msg)
        return ORJSONResponse(decision_to_json(decision, msg.message_id))

    # -- endpoints --------------------------------------------------------------

    async def post_endpoint(self, request: Request) -> Response:
        self.require_admin(request)
        body = await read_body(request, ENDPOINT_BODY_LIMIT)
        ep = EndpointMetrics.from_json_dict(parse_json(body))
        existed = ep.endpoint_id in self.mesh.endpoints
        await self.mesh.add_endpoint(ep)
        return ORJSONResponse(
            self.mesh.endpoint_view(ep.endpoint_id), status_code=200 if existed else 201
        )

    def require_operator(self, request: Request) -> None:
        """Reading the operator's configuration (endpoint URLs, key env
        names, live load): anyone but a tenant key."""
        if self.caller(request).tenant_id:
            raise PermissionDeniedError("admin_only", "this operation needs the admin key")

    async def list_endpoints(self, request: Request) -> Response:
        self.require_operator(request)
        views = [self.mesh.endpoint_view(i) for i in sorted(self.mesh.endpoints)]
        return ORJSONResponse({"endpoints": views})

    async def get_endpoint(self, request: Request) -> Response:
        self.require_operator(request)
        return ORJSONResponse(self.mesh.endpoint_view(request.path_params["endpoint_id"]))

    async def delete_endpoint(self, request: Request) -> Response:
        self.require_admin(request)
        await self.mesh.remove_endpoint(request.path_params["endpoint_id"])
        return Response(status_code=204)

    # -- budgets ----------------------------------------------------------------

    async def post_budget(self, request: Request) -> Response:
        tenant_id = self.budget_scope(request)
        data = parse_json(await read_body(request, BUDGET_BODY_LIMIT))
        agent_id, tokens, reset_at, period_s = parse_budget_request(data)
        info = await self.mesh.set_budget(agent_id, tokens, reset_at, period_s, tenant_id=tenant_id)
        return ORJSONResponse(info.to_json_dict(), status_code=201)

    async def get_budget(self, request: Request) -> Response:
        tenant_id = self.tenant_of(request)
        info = await self.mesh.get_budget(request.path_params["agent_id"], tenant_id=tenant_id)
        return ORJSONResponse(info.to_json_dict())

    async def reset_budget(self, request: Request) -> Response:
        tenant_id = self.budget_scope(request)
        info = await self.mesh.reset_budget(request.path_params["agent_id"], tenant_id=tenant_id)
        return ORJSONResponse(info.to_json_dict())

    # -- observability ------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        """The whole gateway's figures; a tenant key sees only its tenant's
        usage and quota."""
        principal = self.caller(request)
        if not principal.tenant_id:
            return ORJSONResponse(self.mesh.metrics.stats())
        tenant_id = principal.tenant_id
        body = self.mesh.metrics.tenant_stats(tenant_id)
        body["tier"] = self.mesh.tenants.get(tenant_id).tier
        quota = await self.mesh.quota(tenant_id)
        body["quota"] = quota_json(quota)
        return ORJSONResponse(body)

    async def metrics(self, request: Request) -> Response:
        # Labels name every tenant: only the operator may scrape them.
        if self.auth.keys_required:
            self.require_admin(request)
        return Response(
            self.mesh.metrics.prometheus_text(),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    async def health(self, request: Request) -> Response:
        return ORJSONResponse({"status": "ok", "version": _native.__version__})

    async def ready(self, request: Request) -> Response:
        if not self.mesh.ready:
            return ORJSONResponse({"status": "not_ready"}, status_code=503)
        stored = await self.mesh.storage.healthy()
        # Budgets and limits refuse every message while Redis is away.
        shared = self.mesh.shared is None or await self.mesh.shared.healthy()
        ok = stored and shared
        routable = [s for s in self.mesh.router.endpoints() if s.health != "unhealthy"]
        status = (
            "ready" if ok else "storage_unavailable" if not stored else "shared_state_unavailable"
        )
        body = {
            "status": status,
            "storage": stored,
            "shared_state": None if self.mesh.shared is None else shared,
            "endpoints": len(self.mesh.endpoints),
            "routable_endpoints": len(routable),
        }
        return ORJSONResponse(body, status_code=200 if ok else 503)

    async def openapi(self, request: Request) -> Response:
        return ORJSONResponse(openapi_spec(list(self.mesh.config.tiers)))


def quota_json(quota: BudgetInfo | None) -> dict[str, Any] | None:
    """A tenant's monthly quota as callers see it (None: unlimited)."""
    if quota is None:
        return None
    return {
        "tokens_per_month": quota.initial_tokens,
        "remaining_tokens": quota.remaining_tokens,
        "reserved_tokens": quota.reserved_tokens,
        "used_tokens": max(
            0, quota.initial_tokens - quota.remaining_tokens - quota.reserved_tokens
        ),
        "resets_at": quota.reset_at,
    }


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _wrap(handler: Handler, render: Callable[[AiMeshError], Response] = error_response) -> Handler:
    """Turn AiMesh errors into error responses (``render``: AiMesh's JSON
    shape by default); anything unexpected is logged and answered 500
    without internals."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AiMeshError as e:
            return render(e)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return render(AiMeshError("internal_error", "internal server error"))

    return endpoint


class Service(Protocol):
    """Something that runs beside the HTTP app over the same Mesh (the QUIC
    listener): started after the Mesh, told to stop taking work before the
    Mesh drains, stopped after it."""

    async def start(self) -> None: ...
    def begin_shutdown(self) -> None: ...
    async def stop(self) -> None: ...


def create_app(
    mesh: AiMesh,
    *,
    admin_open: bool = False,
    manage_lifecycle: bool = True,
    services: Sequence[Service] = (),
) -> Starlette:
    """The ASGI app for ``mesh``. With ``manage_lifecycle`` the app starts
    and closes the Mesh with the server (lifespan); ``services`` start and
    stop with it."""
    api = HttpApi(mesh, admin_open=admin_open)
    routes = [
        Route("/messages", _wrap(api.post_message), methods=["POST"]),
        Route("/messages/batch", _wrap(api.post_batch), methods=["POST"]),
        Route("/messages/{message_id}", _wrap(api.get_message), methods=["GET"]),
        Route("/route", _wrap(api.post_route), methods=["POST"]),
        Route("/endpoints", _wrap(api.post_endpoint), methods=["POST"]),
        Route("/endpoints", _wrap(api.list_endpoints), methods=["GET"]),
        Route("/endpoints/{endpoint_id:path}", _wrap(api.get_endpoint), methods=["GET"]),
        Route("/endpoints/{endpoint_id:path}", _wrap(api.delete_endpoint), methods=["DELETE"]),
        Route("/budgets", _wrap(api.post_budget), methods=["POST"]),
        Route("/budgets/{agent_id}", _wrap(api.get_budget), methods=["GET"]),
        Route("/budgets/{agent_id}/reset", _wrap(api.reset_budget), methods=["POST"]),
        Route("/stats", _wrap(api.stats), methods=["GET"]),
        Route("/metrics", _wrap(api.metrics), methods=["GET"]),
        Route("/health", _wrap(api.health), methods=["GET"]),
        Route("/ready", _wrap(api.ready), methods=["GET"]),
        Route("/openapi.json", _wrap(api.openapi), methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(NotFoundError("route_not_found", f"no route {request.url.path}"))

    async def not_allowed(request: Request, exc: Exception) -> Response:
        err = AiMeshError("method_not_allowed", f"{request.method} is not allowed here")
        err.status = 405
        response = error_response(err)
        # RFC 9110: a 405 lists the methods the path allows (over all its
        # routes: Starlette names only the first route's).
        allowed = {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
            for method in route.methods or ()
        }
        response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        if manage_lifecycle:
            await mesh.start()
        started: list[Service] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            yield
        finally:
            # Stop taking new work everywhere, drain the Mesh, then close the
            # transports (answers in flight are written before they go).
            for service in started:
                service.begin_shutdown()
            if manage_lifecycle:
                await mesh.close()
            for service in reversed(started):
                await service.stop()

    from aimesh.server.dashboard import dashboard_routes  # imports this module
    from aimesh.server.openai_api import OpenAIFrontDoor  # imports this module
    from aimesh.server.tenants_api import TenantsApi

    routes += OpenAIFrontDoor(api).routes()
    routes += TenantsApi(api).routes()
    routes += dashboard_routes(api)
    app = Starlette(
        routes=routes,
        # Outside the exception handlers, so their 404/405 get the headers too.
        middleware=[Middleware(SecurityHeadersMiddleware)],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    app.state.mesh = mesh
    return app
