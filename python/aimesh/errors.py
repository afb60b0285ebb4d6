"""Exceptions raised by AiMesh, native and Python alike.

Every error carries a machine-readable ``code`` (stable, snake_case), a human
``message`` and the HTTP status the gateway answers with. The native core
raises these same classes, so callers catch one hierarchy.
"""

from __future__ import annotations

from typing import Any


class AiMeshError(Exception):
    """Base class of every AiMesh error."""

    status: int = 500
    default_code: str = "internal_error"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        *,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.message = message or self.code.replace("_", " ")
        self.details = details or {}
        self.retry_after = retry_after
        super().__init__(f"{self.code}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", ...}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return {"error": body}


class FrameError(AiMeshError):
    """A length-prefixed frame or its protobuf body is malformed."""

    status = 400
    default_code = "invalid_frame"


class ValidationError(AiMeshError):
    """A message breaks a protocol rule (agent_id, payload size, priority...)."""

    status = 400
    default_code = "invalid_message"


class AuthenticationError(AiMeshError):
    """Missing or unknown credentials."""

    status = 401
    default_code = "unauthorized"


class BudgetExceededError(AiMeshError):
    """The agent's remaining budget cannot cover the message."""

    status = 402
    default_code = "budget_exceeded"


class PermissionDeniedError(AiMeshError):
    """The credentials are valid but may not do this."""

    status = 403
    default_code = "forbidden"


class NotFoundError(AiMeshError):
    """The resource (message, endpoint, budget, route group) does not exist."""

    status = 404
    default_code = "not_found"


class ConflictError(AiMeshError):
    """The request conflicts with existing state (same message_id, other body)."""

    status = 409
    default_code = "conflict"


class PayloadTooLargeError(AiMeshError):
    """The request body or frame exceeds the configured limit."""

    status = 413
    default_code = "payload_too_large"


class RequestTimeoutError(AiMeshError):
    """The request did not arrive in time (408)."""

    status = 408


class RateLimitError(AiMeshError):
    """Too many requests; retry after ``retry_after`` seconds."""

    status = 429
    default_code = "rate_limited"


class UpstreamError(AiMeshError):
    """Every endpoint in the fallback chain failed."""

    status = 502
    default_code = "upstream_failed"


class RoutingError(AiMeshError):
    """No eligible endpoint (all unhealthy, saturated or none registered)."""

    status = 503
    default_code = "no_endpoint_available"


class QueueFullError(AiMeshError):
    """The queue is at capacity (backpressure); retry after ``retry_after``."""

    status = 503
    default_code = "queue_full"


class ServiceUnavailableError(AiMeshError):
    """The gateway cannot serve now (draining, storage down); retry later."""

    status = 503
    default_code = "unavailable"


class TransportError(AiMeshError):
    """A QUIC stream or connection failed (reset by the server, connection
    lost, timed out). The message may or may not have been processed: resend
    it with the same ``message_id`` (idempotent) to be sure."""

    status = 503
    default_code = "connection_lost"


#: Exception class of an error code carried in a ``rejected`` acknowledgment.
_CLASS_OF_CODE: dict[str, type[AiMeshError]] = {
    "rate_limited": RateLimitError,
    "budget_exceeded": BudgetExceededError,
    "message_budget_exceeded": BudgetExceededError,
    "queue_full": QueueFullError,
    "stream_backlog_full": QueueFullError,
    "message_id_conflict": ConflictError,
    "unknown_group": NotFoundError,
    "no_endpoint_available": RoutingError,
    "draining": ServiceUnavailableError,
    "storage_unavailable": ServiceUnavailableError,
    "shared_state_unavailable": ServiceUnavailableError,
    "tenant_rate_limited": RateLimitError,
    "concurrency_limit": RateLimitError,
    "tenant_quota_exceeded": BudgetExceededError,
    "max_agents_reached": PermissionDeniedError,
    "priority_not_allowed": PermissionDeniedError,
    "model_not_allowed": PermissionDeniedError,
    "missing_api_key": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "unauthenticated": AuthenticationError,
    "frame_too_large": FrameError,
    "truncated_frame": FrameError,
    "invalid_protobuf": FrameError,
}


def error_for_code(
    code: str, message: str = "", *, retry_after: float | None = None
) -> AiMeshError:
    """The exception matching an error code (validation codes and unknown
    ones map to :class:`ValidationError` / :class:`AiMeshError`)."""
    cls = _CLASS_OF_CODE.get(code)
    if cls is None:
        from aimesh import _native  # the native rejection codes are validation codes

        cls = ValidationError if code in _native.REJECTION_CODES else AiMeshError
    return cls(code, message, retry_after=retry_after)


__all__ = [
    "AiMeshError",
    "AuthenticationError",
    "BudgetExceededError",
    "ConflictError",
    "FrameError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QueueFullError",
    "RateLimitError",
    "RoutingError",
    "ServiceUnavailableError",
    "TransportError",
    "UpstreamError",
    "ValidationError",
    "error_for_code",
]
