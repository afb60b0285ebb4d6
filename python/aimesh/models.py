"""Typed models of the AiMesh protocol, shared by the SDK, the server and Mesh.

JSON forms follow the wire contract: snake_case fields, ``payload`` and
``result`` hex-encoded (``payload_text`` may stand in for ``payload``).
Parsing is strict: a wrong type or value raises
:class:`aimesh.errors.ValidationError` with a machine-readable code.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aimesh import _native
from aimesh.errors import AiMeshError, ValidationError

#: Largest number of metadata entries and dependencies a message may carry.
MAX_METADATA_ENTRIES = 64
MAX_DEPENDENCIES = 256
MAX_STRING_FIELD = 256
MAX_METADATA_VALUE = 4096
#: Capacity and load are unsigned 32-bit in the native router.
MAX_U32 = (1 << 32) - 1
#: Largest integer field (SQLite INTEGER and the native core are 64-bit).
MAX_INT64 = (1 << 63) - 1
#: Longest budget period: the next reset (now + period) stays a 64-bit integer.
MAX_PERIOD_S = 1 << 40


def uuid7() -> str:
    """A UUIDv7 string: 48-bit epoch milliseconds then 74 random bits, so ids
    sort by creation time (useful as an index key)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)  # rand_b (62 bits)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class HealthStatus(str, Enum):
    """Health of an endpoint. Parsing is case-insensitive."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @classmethod
    def parse(cls, value: Any) -> HealthStatus:
        if isinstance(value, HealthStatus):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValidationError(
            "invalid_health_status",
            f"health_status must be one of healthy, degraded, unhealthy; got {value!r}",
        )


class AckStatus(str, Enum):
    """Status of an acknowledgment (JSON names)."""

    RECEIVED = "received"
    SUCCESS = "success"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


# -- strict field readers ---------------------------------------------------


def _fail(code: str, message: str) -> ValidationError:
    return ValidationError(code, message)


def _opt_int(
    d: Mapping[str, Any], name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    v = d.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise _fail(f"invalid_{name}", f"{name} must be an integer")
    if minimum is not None and v < minimum:
        raise _fail(f"invalid_{name}", f"{name} must be >= {minimum}")
    if v > MAX_INT64 or (maximum is not None and v > maximum):
        raise _fail(f"invalid_{name}", f"{name} is too large")
    return int(v)


def _str(d: Mapping[str, Any], name: str, default: str = "", limit: int = MAX_STRING_FIELD) -> str:
    v = d.get(name, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise _fail(f"invalid_{name}", f"{name} must be a string")
    if len(v) > limit:
        raise _fail(f"invalid_{name}", f"{name} is longer than {limit} characters")
    return v


def _float(d: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    v = d.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(f"invalid_{name}", f"{name} must be a finite number")
    return float(v)


def _str_list(d: Mapping[str, Any], name: str, limit: int) -> list[str]:
    # Only null means absent: `false`, `0` or `""` are the wrong type (400).
    v = d.get(name)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _fail(f"invalid_{name}", f"{name} must be a list of strings")
    if len(v) > limit:
        raise _fail(f"invalid_{name}", f"{name} has more than {limit} entries")
    if any(len(x) > MAX_STRING_FIELD for x in v):
        raise _fail(f"invalid_{name}", f"{name} entries must be at most {MAX_STRING_FIELD} chars")
    return list(v)


def _str_map(d: Mapping[str, Any], name: str) -> dict[str, str]:
    v = d.get(name)
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise _fail(f"invalid_{name}", f"{name} must be an object of string values")
    if len(v) > MAX_METADATA_ENTRIES:
        raise _fail(f"invalid_{name}", f"{name} has more than {MAX_METADATA_ENTRIES} entries")
    for k, x in v.items():
        if len(k) > MAX_STRING_FIELD or len(x) > MAX_METADATA_VALUE:
            raise _fail(f"invalid_{name}", f"{name} entry {k[:32]!r} is too long")
    return dict(v)


def _hex(d: Mapping[str, Any], name: str) -> bytes | None:
    v = d.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _fail(f"invalid_{name}", f"{name} must be a hex string")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise _fail(f"invalid_{name}", f"{name} is not valid hex") from None


# -- messages ---------------------------------------------------------------


@dataclass(slots=True)
class AIMessage:
    """One message from an agent. Only ``agent_id`` and ``payload`` are
    required; ``message_id`` defaults to a fresh UUIDv7."""

    agent_id: str
    payload: bytes
    message_id: str = field(default_factory=uuid7)
    estimated_cost_tokens: int | None = None
    budget_tokens: int | None = None
    deadline_ms: int | None = None
    task_graph_id: str = ""
    dependencies: list[str] = field(default_factory=list)
    priority: int = 50
    dedup_context: str = ""
    trace_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    timestamp: int = field(default_factory=time.time_ns)
    #: The tenant the message belongs to ("" = the default tenant). Set by
    #: the server from the caller's key, never read from the wire.
    tenant_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.payload, str):
            self.payload = self.payload.encode()
        elif not isinstance(self.payload, bytes):
            self.payload = bytes(self.payload)

    @property
    def group(self) -> str | None:
        """The route group (``metadata["model"]``), if any."""
        return self.metadata.get("model") or None

    @property
    def scoped_agent(self) -> str:
        """The agent's name across tenants (budgets, limits, dedup)."""
        return scoped(self.tenant_id, self.agent_id)

    @property
    def scoped_id(self) -> str:
        """The message id across tenants (reservations, idempotency). Always
        ``tenant/id``: message ids may hold ``/``, tenant ids may not, so the
        default tenant's ``a/b`` (``/a/b``) is not tenant a's ``b``."""
        return f"{self.tenant_id}/{self.message_id}"

    def estimated_tokens(self) -> int:
        """``estimated_cost_tokens`` or an estimate from the payload size
        (about four bytes per token, at least one)."""
        if self.estimated_cost_tokens is not None:
            return self.estimated_cost_tokens
        return estimate_tokens(len(self.payload))

    def to_protobuf(self) -> bytes:
        """The AIMessage protobuf (no length prefix), deterministic."""
        return _native.encode_message(
            agent_id=self.agent_id,
            payload=self.payload,
            message_id=self.message_id,
            estimated_cost_tokens=self.estimated_cost_tokens,
            budget_tokens=self.budget_tokens,
            deadline_ms=self.deadline_ms,
            task_graph_id=self.task_graph_id,
            dependencies=self.dependencies,
            priority=self.priority,
            dedup_context=self.dedup_context,
            trace_id=self.trace_id,
            metadata=self.metadata,
            timestamp=self.timestamp,
        )

    @classmethod
    def from_view(cls, view: _native.MessageView) -> AIMessage:
        """From a natively decoded view (defaults applied: a new message_id
        when empty, priority 50 when absent). The size limits of the JSON
        form apply too (``ValidationError``): protobuf must not be a way
        around them."""
        texts = {
            "message_id": view.message_id,
            "task_graph_id": view.task_graph_id,
            "dedup_context": view.dedup_context,
            "trace_id": view.trace_id,
            "dependencies": view.dependencies,
            "metadata": view.metadata,
        }
        texts["agent_id"] = view.agent_id
        for name in ("agent_id", "message_id", "task_graph_id", "trace_id"):
            _str(texts, name)
        _str(texts, "dedup_context", limit=4096)  # as in the JSON form
        _str_list(texts, "dependencies", MAX_DEPENDENCIES)
        _str_map(texts, "metadata")
        return cls(
            agent_id=view.agent_id,
            payload=bytes(view.payload),
            message_id=view.message_id or uuid7(),
            estimated_cost_tokens=view.estimated_cost_tokens,
            budget_tokens=view.budget_tokens,
            deadline_ms=view.deadline_ms,
            task_graph_id=view.task_graph_id,
            dependencies=view.dependencies,
            priority=50 if view.priority is None else view.priority,
            dedup_context=view.dedup_context,
            trace_id=view.trace_id,
            metadata=view.metadata,
            timestamp=view.timestamp or time.time_ns(),
        )

    @classmethod
    def from_protobuf(cls, data: bytes) -> AIMessage:
        """Decode one AIMessage protobuf; ``FrameError`` if malformed."""
        return cls.from_view(_native.decode_message(data))

    def to_json_dict(self) -> dict[str, Any]:
        """JSON form with a hex payload; absent optionals are omitted."""
        d: dict[str, Any] = {
            "agent_id": self.agent_id,
            "message_id": self.message_id,
            "payload": self.payload.hex(),
            "priority": self.priority,
            "timestamp": self.timestamp,
        }
        for name in ("estimated_cost_tokens", "budget_tokens", "deadline_ms"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        for name in ("task_graph_id", "dedup_context", "trace_id"):
            v = getattr(self, name)
            if v:
                d[name] = v
        if self.dependencies:
            d["dependencies"] = list(self.dependencies)
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d

    @classmethod
    def from_json_dict(cls, d: Any) -> AIMessage:
        """Parse the JSON form strictly (types, sizes, hex)."""
        if not isinstance(d, dict):
            raise _fail("invalid_body", "a message must be a JSON object")
        agent_id = d.get("agent_id")
        if not isinstance(agent_id, str):
            raise _fail("invalid_agent_id", "agent_id is required and must be a string")
        _str(d, "agent_id")  # at most MAX_STRING_FIELD characters
        # payload_text is checked even when payload wins: a wrong field is a
        # 400 wherever it is, not silently ignored.
        text = d.get("payload_text")
        if text is not None and not isinstance(text, str):
            raise _fail("invalid_payload_text", "payload_text must be a string")
        payload = _hex(d, "payload")
        if payload is None:
            if text is None:
                raise _fail("payload_required", "payload (hex) or payload_text is required")
            payload = text.encode()
        priority = _opt_int(d, "priority")
        message_id = _str(d, "message_id")
        timestamp = _opt_int(d, "timestamp", minimum=0)
        return cls(
            agent_id=agent_id,
            payload=payload,
            message_id=message_id or uuid7(),
            estimated_cost_tokens=_opt_int(d, "estimated_cost_tokens", minimum=0),
            budget_tokens=_opt_int(d, "budget_tokens"),
            deadline_ms=_opt_int(d, "deadline_ms"),
            task_graph_id=_str(d, "task_graph_id"),
            dependencies=_str_list(d, "dependencies", MAX_DEPENDENCIES),
            priority=50 if priority is None else priority,
            dedup_context=_str(d, "dedup_context", limit=4096),
            trace_id=_str(d, "trace_id"),
            metadata=_str_map(d, "metadata"),
            timestamp=timestamp or time.time_ns(),
        )


def scoped(tenant_id: str, name: str) -> str:
    """``name`` inside a tenant. Agent ids cannot hold ``/``, so
    ``tenant/agent`` never collides with an agent of the default tenant."""
    return f"{tenant_id}/{name}" if tenant_id else name


def unscoped(name: str) -> str:
    """The tenant's own name for a scoped one."""
    return name.rpartition("/")[2]


#: The SDK name of :class:`AIMessage`.
Message = AIMessage


def estimate_tokens(payload_len: int) -> int:
    """Rough token estimate for a payload: ~4 bytes a token, at least 1."""
    return max(1, (payload_len + 3) // 4)


@dataclass(slots=True)
class Acknowledgment:
    """The answer to a message: status, result, tokens and latency."""

    original_message_id: str
    status: AckStatus
    tokens_used: int = 0
    processing_latency_ms: float = 0.0
    endpoint_id: str = ""
    error: str = ""
    result: bytes = b""
    error_code: str = ""
    retry_after_s: float = 0.0
    trace_id: str = ""

    @classmethod
    def rejected(cls, message_id: str, error: AiMeshError, trace_id: str = "") -> Acknowledgment:
        """The ``rejected`` answer to a message refused before delivery: the
        error's code and message, and its retry-after (0 when none)."""
        return cls(
            original_message_id=message_id,
            status=AckStatus.REJECTED,
            error=error.message,
            error_code=error.code,
            retry_after_s=error.retry_after or 0.0,
            trace_id=trace_id,
        )

    @property
    def result_text(self) -> str:
        """The result decoded as UTF-8 (invalid bytes replaced)."""
        return self.result.decode("utf-8", "replace")

    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "original_message_id": self.original_message_id,
            "status": self.status.value,
            "tokens_used": self.tokens_used,
            "processing_latency_ms": round(self.processing_latency_ms, 3),
            "endpoint_id": self.endpoint_id,
            "error": self.error or None,
            "result": self.result.hex() if self.result else None,
        }
        if self.error_code:
            d["error_code"] = self.error_code
        if self.retry_after_s:
            d["retry_after"] = self.retry_after_s
        if self.trace_id:
            d["trace_id"] = self.trace_id
        return d

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> Acknowledgment:
        status = d.get("status", "failed")
        try:
            st = AckStatus(status)
        except ValueError:
            st = AckStatus.FAILED
        return cls(
            original_message_id=str(d.get("original_message_id", "")),
            status=st,
            tokens_used=int(d.get("tokens_used") or 0),
            processing_latency_ms=float(d.get("processing_latency_ms") or 0.0),
            endpoint_id=str(d.get("endpoint_id") or ""),
            error=str(d.get("error") or ""),
            result=bytes.fromhex(d["result"]) if d.get("result") else b"",
            error_code=str(d.get("error_code") or ""),
            retry_after_s=float(d.get("retry_after") or 0.0),
            trace_id=str(d.get("trace_id") or ""),
        )


@dataclass(slots=True)
class EndpointMetrics:
    """An upstream model endpoint and its (reported or measured) figures.

    If ``url`` is empty and ``endpoint_id`` is an http(s) URL, that URL is
    the endpoint. ``group`` is the route group (e.g. ``gpt-4o``); ``model``
    the upstream model name (defaults to the group). ``api_key_env`` names
    the environment variable holding the upstream API key."""

    endpoint_id: str
    capacity: int = 100
    current_load: int = 0
    cost_per_1k_tokens: float = 0.0
    latency_p99_ms: float = 0.0
    error_rate: float = 0.0
    health_status: HealthStatus = HealthStatus.HEALTHY
    url: str = ""
    kind: str = "openai"
    group: str = ""
    model: str = ""
    tags: list[str] = field(default_factory=list)
    region: str = ""
    api_key_env: str = ""

    def __post_init__(self) -> None:
        self.health_status = HealthStatus.parse(self.health_status)
        if not self.url and self.endpoint_id.startswith(("http://", "https://")):
            self.url = self.endpoint_id

    @property
    def upstream_model(self) -> str:
        return self.model or self.group

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "capacity": self.capacity,
            "current_load": self.current_load,
            "cost_per_1k_tokens": self.cost_per_1k_tokens,
            "latency_p99_ms": self.latency_p99_ms,
            "error_rate": self.error_rate,
            "health_status": self.health_status.value,
            "url": self.url,
            "kind": self.kind,
            "group": self.group,
            "model": self.model,
            "tags": list(self.tags),
            "region": self.region,
            "api_key_env": self.api_key_env,
        }

    @classmethod
    def from_json_dict(cls, d: Any) -> EndpointMetrics:
        """Parse strictly; unknown ``kind`` or bad numbers raise ValidationError."""
        if not isinstance(d, dict):
            raise _fail("invalid_body", "an endpoint must be a JSON object")
        endpoint_id = _str(d, "endpoint_id", limit=2048)
        if not endpoint_id:
            raise _fail("invalid_endpoint_id", "endpoint_id is required")
        # Bounded here: the router would raise OverflowError (a 500) after
        # the endpoint was already persisted.
        capacity = _opt_int(d, "capacity", minimum=1, maximum=MAX_U32)
        current_load = _opt_int(d, "current_load", minimum=0, maximum=MAX_U32)
        cost = _float(d, "cost_per_1k_tokens")
        latency = _float(d, "latency_p99_ms")
        error_rate = _float(d, "error_rate")
        if cost < 0:
            raise _fail("invalid_cost_per_1k_tokens", "cost_per_1k_tokens must be >= 0")
        if latency < 0:
            raise _fail("invalid_latency_p99_ms", "latency_p99_ms must be >= 0")
        if not 0.0 <= error_rate <= 1.0:
            raise _fail("invalid_error_rate", "error_rate must be between 0 and 1")
        kind = _str(d, "kind", "openai")
        if kind not in ENDPOINT_KINDS:
            raise _fail("invalid_kind", f"kind must be one of {', '.join(sorted(ENDPOINT_KINDS))}")
        url = _str(d, "url", limit=2048)
        ep = cls(
            endpoint_id=endpoint_id,
            capacity=100 if capacity is None else capacity,
            current_load=current_load or 0,
            cost_per_1k_tokens=cost,
            latency_p99_ms=latency,
            error_rate=error_rate,
            health_status=HealthStatus.parse(d.get("health_status", "healthy")),
            url=url,
            kind=kind,
            group=_str(d, "group"),
            model=_str(d, "model"),
            tags=_str_list(d, "tags", 32),
            region=_str(d, "region"),
            api_key_env=_str(d, "api_key_env"),
        )
        if ep.url and not ep.url.startswith(("http://", "https://")):
            raise _fail("invalid_url", "url must be an http(s) URL")
        return ep


#: Upstream adapter kinds.
ENDPOINT_KINDS = frozenset({"openai", "http"})


def parse_budget_request(d: Any) -> tuple[str, int, int | None, int | None]:
    """``(agent_id, tokens, reset_at, period_s)`` of a ``POST /budgets`` body,
    strictly: integers as in a message (``5.0`` is 5), non-negative, at most
    64-bit; ``ValidationError`` otherwise (the agent id is checked by the
    Mesh)."""
    if not isinstance(d, dict):
        raise _fail("invalid_body", "a budget must be a JSON object")
    agent_id = d.get("agent_id")
    if not isinstance(agent_id, str):
        raise _fail("invalid_agent_id", "agent_id is required")
    _str(d, "agent_id")
    tokens = _opt_int(d, "tokens", minimum=0)
    if tokens is None:
        raise _fail("invalid_tokens", "tokens is required")
    reset_at = _opt_int(d, "reset_at", minimum=0)
    period_s = _opt_int(d, "period_s", minimum=0, maximum=MAX_PERIOD_S)
    return agent_id, tokens, reset_at, period_s


@dataclass(slots=True)
class BudgetInfo:
    """An agent's token budget. ``remaining_tokens`` excludes reservations
    of in-flight messages."""

    agent_id: str
    initial_tokens: int
    remaining_tokens: int
    reserved_tokens: int = 0
    consumption_rate: float = 0.0
    reset_at: int | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "initial_tokens": self.initial_tokens,
            "remaining_tokens": self.remaining_tokens,
            "reserved_tokens": self.reserved_tokens,
            "consumption_rate": self.consumption_rate,
            "reset_at": self.reset_at,
        }

    @classmethod
    def from_json_dict(cls, d: Mapping[str, Any]) -> BudgetInfo:
        return cls(
            agent_id=str(d["agent_id"]),
            initial_tokens=int(d.get("initial_tokens") or 0),
            remaining_tokens=int(d.get("remaining_tokens") or 0),
            reserved_tokens=int(d.get("reserved_tokens") or 0),
            consumption_rate=float(d.get("consumption_rate") or 0.0),
            reset_at=d.get("reset_at"),
        )
