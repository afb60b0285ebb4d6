"""Types shared by the adapters and the delivery engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

#: Receives a streamed answer event by event (Server-Sent Events bytes).
#: Raises :class:`ClientGone` when the reader went away.
StreamSink = Callable[[bytes], Awaitable[None]]


class ClientGone(Exception):
    """The client of a streamed answer disconnected."""


@dataclass(slots=True)
class DeliveryRequest:
    """What is sent upstream for one message."""

    payload: bytes
    message_id: str
    trace_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    deadline_ms: int | None = None
    estimated_tokens: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    #: When set, the answer is streamed to it as it arrives (chat
    #: completions with ``stream: true``); a failure after the first event
    #: cannot fall back to another endpoint.
    sink: StreamSink | None = None


@dataclass(slots=True)
class DeliveryResult:
    """The upstream's answer."""

    result: bytes
    tokens_used: int
    latency_ms: float
    endpoint_id: str
    attempts: int = 1
    fallbacks_used: int = 0


class EndpointFailure(Exception):
    """One failed attempt. ``retryable`` failures (connect errors, timeouts,
    429, 5xx, malformed answers) may be retried and fall back to the next
    endpoint; others (an upstream 4xx) mean the request itself is bad."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        tokens_used: int = 0,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        # Tokens the upstream spent before the failure (a stream cut short):
        # they are charged to the budget.
        self.tokens_used = tokens_used
