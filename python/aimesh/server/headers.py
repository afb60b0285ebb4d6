"""Security headers on every HTTP answer, as a pure ASGI middleware.

Pure ASGI (not Starlette's ``BaseHTTPMiddleware``): it only edits the
``http.response.start`` message, so streamed answers (the OpenAI front
door's Server-Sent Events) pass through untouched and unbuffered.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Set on every answer unless the route set its own value (the dashboard's
#: page and assets use ``no-cache``; the event stream ``no-cache`` too).
DEFAULT_HEADERS = {
    # A JSON error must never be sniffed into HTML by a browser.
    "x-content-type-options": "nosniff",
    # API answers carry live state, budgets and results: never cached by a
    # browser or a shared proxy.
    "cache-control": "no-store",
}


class SecurityHeadersMiddleware:
    """Add :data:`DEFAULT_HEADERS` to every HTTP answer that lacks them.

    CORS stays off: nothing here (or anywhere in the app) adds
    ``Access-Control-Allow-*``, so browsers keep other origins out, and a
    preflight ``OPTIONS`` gets the app's JSON 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULT_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
