"""The live dashboard: ``GET /dashboard`` (a static page) and
``GET /dashboard/state`` (one JSON snapshot the page polls).

The snapshot carries the same figures as ``/stats`` and the Prometheus
gauges (endpoint states, routing decisions, budgets, queue depth, totals and
latency percentiles), so it is guarded like the admin routes: open on a
loopback address without an admin key, ``Authorization: Bearer
$AIMESH_ADMIN_KEY`` otherwise.

The page itself (HTML, JS, CSS under ``static/``) holds no data. A browser
cannot send a bearer header when it navigates, so with an admin key set the
page is served to anyone and asks for the key before it reads the snapshot;
without a key it is guarded exactly like the snapshot (open on loopback, 403
on a public address, where the snapshot could never be read anyway).
"""

from __future__ import annotations

import functools
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aimesh.mesh import AiMesh

if TYPE_CHECKING:
    from aimesh.server.app import HttpApi

#: Routing decisions in one snapshot (the Mesh keeps the last 50).
SNAPSHOT_DECISIONS = 50

# Everything the page loads comes from this origin; nothing inline, no
# framing, no forms: a stolen page can neither run injected code nor be
# embedded to trick an operator.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

# name -> content type of the files under static/ the routes serve.
_ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


@functools.cache
def _asset(name: str) -> bytes:
    # Read once per process; a missing file (a broken install) is a 500 on
    # the dashboard only, never a gateway that fails to start.
    return (resources.files("aimesh.server") / "static" / name).read_bytes()


def dashboard_state(mesh: AiMesh) -> dict[str, Any]:
    """One snapshot of ``mesh`` for the dashboard, from in-memory figures
    only (no storage read, so polling it costs the hot path nothing)."""
    stats = mesh.metrics.stats()
    measured = stats["endpoints"]
    open_circuits = set(mesh.deliverer.open_circuits())
    endpoints = []
    for s in sorted(mesh.router.endpoints(), key=lambda e: e.endpoint_id):
        endpoints.append(
            {
                "endpoint_id": s.endpoint_id,
                "group": s.group,
                "health": s.health,
                "circuit_open": s.endpoint_id in open_circuits,
                "current_load": s.current_load,
                "capacity": s.capacity,
                # The router's live P99 (recent window), the one it scores with.
                "latency_p99_ms": round(s.latency_p99_ms, 3),
                # Measured since start: P50/P99/P99.9 of delivered attempts.
                "latency_ms": measured.get(s.endpoint_id, {}).get("latency_ms", {}),
                "error_rate": round(s.error_rate, 6),
                "cost_per_1k_tokens": s.cost_per_1k_tokens,
                "requests": s.requests,
                "failures": s.failures,
            }
        )
    recent = list(mesh.recent_decisions)[-SNAPSHOT_DECISIONS:]
    decisions = [d.to_json_dict() for d in reversed(recent)]  # newest first
    budgets = [
        {
            "agent_id": b.agent_id,
            "tenant_id": tenant,
            "limit": b.initial_tokens,
            # BudgetInfo has no "used": remaining = limit - used - reserved,
            # floored at 0 (an overshoot then shows as fully used).
            "used": max(0, b.initial_tokens - b.remaining_tokens - b.reserved_tokens),
            "reserved": b.reserved_tokens,
            "remaining": b.remaining_tokens,
            "reset_at": b.reset_at,
        }
        for tenant, b in sorted(mesh.metrics_budgets(), key=lambda tb: (tb[0], tb[1].agent_id))
    ]
    return {
        "server_time_ms": int(time.time() * 1000),
        "uptime_s": stats["uptime_s"],
        "queue_depth": stats["queue_depth"],
        "messages": stats["messages"],
        "messages_total": stats["messages_total"],
        "async_accepted": stats["async_accepted"],
        "rejections": stats["rejections"],
        "tokens_used": stats["tokens_used"],
        "cost": stats["cost"],
        "latency_ms": stats["latency_ms"],
        "endpoints": endpoints,
        "decisions": decisions,
        "budgets": budgets,
    }


def dashboard_routes(api: HttpApi) -> list[Route]:
    """``GET /dashboard``, its two assets and ``GET /dashboard/state`` for
    the Mesh behind ``api`` (errors are the app's JSON errors)."""
    # Imported here: app.py imports this module while it builds the app.
    from aimesh.server.app import ORJSONResponse, _wrap

    def guard_page(request: Request) -> None:
        # With a key the page is public (see the module docstring); without
        # one it is open exactly where admin routes are.
        if not api.auth.keys_required:
            api.require_admin(request)

    def static(name: str) -> Route:
        async def serve(request: Request) -> Response:
            guard_page(request)
            # no-cache: revalidated on every load, so an upgrade shows at once.
            headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
            return Response(_asset(name), media_type=_ASSETS[name], headers=headers)

        path = "/dashboard" if name == "dashboard.html" else f"/dashboard/{name}"
        # A page and its assets, not API: kept out of the API schema.
        return Route(path, _wrap(serve), methods=["GET"], include_in_schema=False)

    async def state(request: Request) -> Response:
        api.require_admin(request)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return ORJSONResponse(dashboard_state(api.mesh), headers=headers)

    return [
        Route("/dashboard/state", _wrap(state), methods=["GET"]),
        *(static(name) for name in _ASSETS),
    ]
