"""Types shared by the adapters and the delivery engine."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
