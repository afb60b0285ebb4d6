"""Typed contract of ``aimesh._native``, the Rust core of AiMesh.

Every native class and function is declared and documented here. The native
module raises the exception classes of :mod:`aimesh.errors` (each with a
``code``); it never panics into Python.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, final

# bytes-like objects accepted by the native API. ``bytes`` is read without a
# copy; other buffers (bytearray, memoryview) are copied once so that the
# native side never reads memory that Python code may mutate.
_Buffer = bytes | bytearray | memoryview

__version__: str

#: Largest payload a message may carry (1 MiB).
MAX_PAYLOAD_BYTES: int
#: Default largest frame body accepted by the decoder (payload limit + 64 KiB).
DEFAULT_MAX_FRAME_BYTES: int
#: Rejection codes of the batch path, indexed by ``BatchRouteResult.reasons``
#: (index 0 is ``"routed"``).
REJECTION_CODES: tuple[str, ...]

# --------------------------------------------------------------------------
# Frames and zero-copy buffers (rust/src/buffer.rs)
# --------------------------------------------------------------------------

@final
class MessageView:
    """One decoded AIMessage. ``payload`` is a memoryview onto the source
    buffer (no copy); the view keeps the source alive."""

    @property
    def agent_id(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def payload(self) -> memoryview: ...
    @property
    def payload_len(self) -> int: ...
    @property
    def estimated_cost_tokens(self) -> int | None: ...
    @property
    def budget_tokens(self) -> int | None: ...
    @property
    def deadline_ms(self) -> int | None: ...
    @property
    def task_graph_id(self) -> str: ...
    @property
    def dependencies(self) -> list[str]: ...
    @property
    def priority(self) -> int | None:
        """Raw priority; ``None`` when absent (callers apply the default 50)."""
    @property
    def dedup_context(self) -> str: ...
    @property
    def trace_id(self) -> str: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    @property
    def timestamp(self) -> int: ...
    def validate(self, now_ms: int | None = None) -> None:
        """Apply the protocol rules; raise ``ValidationError`` with its code."""
    def encode(self) -> bytes:
        """Re-encode as protobuf (no length prefix), deterministically."""
    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict (``payload`` as ``bytes``, absent optionals as None)."""

@final
class MessageBuffer:
    """A buffer of length-prefixed AIMessage frames, decoded without copying
    payloads. Index or iterate it to get :class:`MessageView` objects."""

    def __new__(cls, data: _Buffer, max_frame_bytes: int = ...) -> MessageBuffer:
        """Decode every frame of ``data``; raise ``FrameError`` (codes
        ``truncated_frame``, ``frame_too_large``, ``invalid_protobuf``)."""
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> MessageView: ...
    def __iter__(self) -> Iterator[MessageView]: ...
    @property
    def nbytes(self) -> int:
        """Size of the source buffer in bytes."""

def decode_frames(data: _Buffer, max_frame_bytes: int = ...) -> MessageBuffer:
    """Same as ``MessageBuffer(data, max_frame_bytes)``."""

def decode_batch(data: _Buffer, max_frame_bytes: int = ...) -> MessageBuffer:
    """Decode the AIMessages of one ``MessageBatch`` protobuf body (no
    length prefix) without copying payloads; ``FrameError`` if malformed or
    if one message is larger than ``max_frame_bytes``."""

def encode_batch(bodies: Sequence[_Buffer]) -> bytes:
    """A ``MessageBatch`` protobuf body from encoded AIMessages (each as
    :func:`encode_message` or ``AIMessage.to_protobuf`` made it)."""

@final
class RawFrame:
    """One complete frame body from :class:`FrameDecoder`, still inside the
    bytes it arrived in."""

    def __len__(self) -> int: ...
    def view(self) -> memoryview:
        """The body as a zero-copy memoryview."""
    def tobytes(self) -> bytes:
        """The body as new ``bytes``."""
    def message(self) -> MessageView:
        """Decode the body as one AIMessage (payload not copied);
        ``FrameError`` if it is not valid protobuf."""
    def batch(self, max_frame_bytes: int = ...) -> MessageBuffer:
        """Decode the body as one ``MessageBatch`` (payloads not copied)."""

@final
class FrameDecoder:
    """Incremental reader of length-prefixed frames from a stream that
    arrives in pieces. Frames inside one piece are views of it; only a frame
    split across pieces is copied. A header announcing more than
    ``max_frame_bytes`` raises ``FrameError("frame_too_large")`` at once,
    before the body arrives, and the decoder refuses any further input."""

    def __new__(cls, max_frame_bytes: int = ...) -> FrameDecoder: ...
    def feed(self, data: _Buffer) -> list[RawFrame]:
        """Add the next piece; answer the frames it completes, in order."""
    @property
    def max_frame_bytes(self) -> int:
        """The largest frame body accepted from now on. Setting it checks a
        frame already begun against the new limit (``FrameError``)."""
    @max_frame_bytes.setter
    def max_frame_bytes(self, value: int) -> None: ...
    @property
    def pending_bytes(self) -> int:
        """Bytes held for a frame that is not complete yet."""
    def finish(self) -> None:
        """The stream ended: ``FrameError("truncated_frame")`` if it stopped
        inside a frame."""

def decode_message(data: _Buffer) -> MessageView:
    """Decode one protobuf AIMessage (no length prefix)."""

def encode_message(
    *,
    agent_id: str,
    payload: _Buffer,
    message_id: str = "",
    estimated_cost_tokens: int | None = None,
    budget_tokens: int | None = None,
    deadline_ms: int | None = None,
    task_graph_id: str = "",
    dependencies: Sequence[str] = (),
    priority: int | None = None,
    dedup_context: str = "",
    trace_id: str = "",
    metadata: Mapping[str, str] | None = None,
    timestamp: int = 0,
) -> bytes:
    """Encode one AIMessage as protobuf (no length prefix), deterministically
    (map entries in key order)."""

def frame(body: _Buffer) -> bytes:
    """Prefix one encoded message with its 4-byte big-endian length."""

def encode_frames(bodies: Sequence[_Buffer]) -> bytes:
    """Concatenate the framed form of many encoded messages."""

def split_frames(data: _Buffer, max_frame_bytes: int = ...) -> list[memoryview]:
    """Split length-prefixed frames of any message type into zero-copy
    memoryviews of their bodies; raise ``FrameError`` on bad framing."""

# --------------------------------------------------------------------------
# Validation (rust/src/validate.rs)
# --------------------------------------------------------------------------

def validate_fields(
    agent_id: str,
    payload_len: int,
    budget_tokens: int | None = None,
    deadline_ms: int | None = None,
    priority: int | None = None,
    now_ms: int | None = None,
    max_payload_bytes: int = ...,
) -> None:
    """Apply the protocol rules, raising ``ValidationError`` with one of the
    codes ``invalid_agent_id`` (empty or not ``^[a-z0-9_-]+$``),
    ``payload_required`` (empty), ``payload_too_large`` (> 1 MiB by default),
    ``invalid_budget_tokens`` (<= 0), ``deadline_in_past`` (<= now) or
    ``invalid_priority`` (outside 0-100)."""

# --------------------------------------------------------------------------
# Router (rust/src/router.rs)
# --------------------------------------------------------------------------

@final
class RoutingScore:
    """Score breakdown: each part already multiplied by its weight."""

    @property
    def cost_score(self) -> float: ...
    @property
    def load_score(self) -> float: ...
    @property
    def latency_score(self) -> float: ...
    @property
    def total_score(self) -> float: ...

@final
class RoutingDecision:
    """The chosen endpoint, why, and the fallback chain (best first)."""

    @property
    def target_endpoint(self) -> str: ...
    @property
    def score_breakdown(self) -> RoutingScore: ...
    @property
    def fallback_endpoints(self) -> list[str]: ...
    @property
    def fallback_scores(self) -> list[RoutingScore]: ...
    @property
    def reason(self) -> str: ...
    @property
    def group(self) -> str | None: ...
    @property
    def candidates(self) -> int:
        """How many endpoints were eligible."""

@final
class EndpointState:
    """Snapshot of one endpoint as the router sees it (live figures)."""

    @property
    def endpoint_id(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def capacity(self) -> int: ...
    @property
    def current_load(self) -> int: ...
    @property
    def cost_per_1k_tokens(self) -> float: ...
    @property
    def latency_p99_ms(self) -> float: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def health(self) -> str:
        """``"healthy"``, ``"degraded"`` or ``"unhealthy"``."""
    @property
    def requests(self) -> int: ...
    @property
    def failures(self) -> int: ...

@final
class BatchRouteResult:
    """Compact result of :meth:`Router.route_batch` for a whole batch."""

    @property
    def count(self) -> int: ...
    @property
    def routed(self) -> int: ...
    @property
    def endpoint_ids(self) -> list[str]:
        """Table of endpoint ids; ``indices`` point into it."""
    @property
    def indices(self) -> memoryview:
        """int32 per message (format ``"i"``): index into ``endpoint_ids``,
        or -1 when the message was rejected."""
    @property
    def reasons(self) -> memoryview:
        """uint8 per message (format ``"B"``): index into ``REJECTION_CODES``
        (0 = routed)."""
    @property
    def rejections(self) -> dict[str, int]:
        """Count of rejected messages by code."""

@final
class Router:
    """Cost-aware scoring router: lowest
    ``w_cost*cost + w_load*load + w_latency*latency`` wins.

    With ``normalize=True`` each factor is divided by its maximum over the
    eligible candidates (so it lies in 0..1 and the weights are the shares
    they say); with ``normalize=False`` the literal formula is used, with
    ``load = current_load / capacity * 100``. Unhealthy endpoints and
    saturated ones (``current_load >= capacity``) are never chosen.
    Thread-safe."""

    def __new__(
        cls,
        w_cost: float = 0.4,
        w_load: float = 0.3,
        w_latency: float = 0.3,
        normalize: bool = True,
    ) -> Router: ...
    @property
    def weights(self) -> tuple[float, float, float]: ...
    @property
    def normalize(self) -> bool: ...
    def upsert_endpoint(
        self,
        endpoint_id: str,
        *,
        group: str = "",
        capacity: int = 100,
        current_load: int = 0,
        cost_per_1k_tokens: float = 0.0,
        latency_p99_ms: float = 0.0,
        error_rate: float = 0.0,
        health: str = "healthy",
    ) -> None:
        """Add or replace an endpoint. ``latency_p99_ms`` and ``error_rate``
        are priors until live deliveries are recorded. ``health`` is
        case-insensitive; a bad value raises ``ValidationError``."""
    def remove_endpoint(self, endpoint_id: str) -> bool: ...
    def set_health(self, endpoint_id: str, health: str) -> None:
        """Raise ``NotFoundError`` for an unknown endpoint."""
    def endpoint(self, endpoint_id: str) -> EndpointState | None: ...
    def endpoints(self) -> list[EndpointState]: ...
    def groups(self) -> list[str]: ...
    def route(self, group: str | None = None, exclude: Sequence[str] = ()) -> RoutingDecision:
        """Pick the best eligible endpoint (within ``group`` if given, across
        all otherwise), skipping ``exclude``. Raise ``NotFoundError``
        (``unknown_group``) for a group with no endpoints at all and
        ``RoutingError`` (``no_endpoint_available``) when none is eligible."""
    def route_batch(
        self,
        frames: _Buffer | MessageBuffer,
        now_ms: int | None = None,
        commit_load: bool = False,
        max_frame_bytes: int = ...,
    ) -> BatchRouteResult:
        """Decode, validate and route a whole buffer of length-prefixed
        AIMessage frames in one call with the GIL released. Each message is
        routed within its ``metadata["model"]`` group (or across all) as if
        the messages before it in the batch were in flight, so a batch
        spreads over endpoints and never over-fills one; with
        ``commit_load=True`` that load is added to the live state (the
        caller then records each finish). Invalid messages are rejected
        with their validation code; broken framing raises ``FrameError``.
        ``frames`` may also be an already decoded :class:`MessageBuffer`
        (from :func:`decode_frames` or :func:`decode_batch`): it is routed
        without a second scan."""
    def record_start(self, endpoint_id: str) -> None:
        """A delivery to the endpoint started (load + 1)."""
    def record_finish(self, endpoint_id: str, latency_ms: float, success: bool) -> None:
        """A delivery finished (load - 1): feeds the decaying P99 latency
        estimate and the error rate."""

# --------------------------------------------------------------------------
# Rate limiters (rust/src/limiter.rs)
# --------------------------------------------------------------------------

@final
class TokenBucket:
    """Per-key token buckets (``rate`` tokens/s, capacity ``burst``) with an
    optional global bucket beside them. A request is admitted only if both
    its key's bucket and the global one have ``n`` tokens; otherwise nothing
    is consumed. Idle keys are evicted so the key map stays bounded by
    ``max_keys``. Thread-safe and exact."""

    def __new__(
        cls,
        rate: float,
        burst: float,
        *,
        global_rate: float | None = None,
        global_burst: float | None = None,
        max_keys: int = 100_000,
    ) -> TokenBucket: ...
    def try_acquire(self, key: str, n: int = 1, now: float | None = None) -> tuple[bool, float]:
        """``(True, 0.0)`` when admitted, else ``(False, retry_after_s)``.
        ``now`` is seconds on a monotonic clock (for tests); by default the
        limiter's own monotonic clock is used."""
    def __len__(self) -> int:
        """Keys currently tracked."""

@final
class SlidingWindow:
    """Per-key exact sliding-window limiters (at most ``limit`` admitted in
    any window of ``window_s`` seconds) with an optional global one.
    Thread-safe; the key map stays bounded by ``max_keys``."""

    def __new__(
        cls,
        limit: int,
        window_s: float,
        *,
        global_limit: int | None = None,
        max_keys: int = 100_000,
    ) -> SlidingWindow: ...
    def try_acquire(self, key: str, n: int = 1, now: float | None = None) -> tuple[bool, float]:
        """Same contract as :meth:`TokenBucket.try_acquire`."""
    def __len__(self) -> int: ...

# --------------------------------------------------------------------------
# Priority queue (rust/src/pqueue.rs)
# --------------------------------------------------------------------------

@final
class PriorityQueue:
    """Bounded priority queue of Python objects: higher priority first, then
    earlier deadline (no deadline last), then arrival order. Thread-safe."""

    def __new__(cls, capacity: int) -> PriorityQueue: ...
    @property
    def capacity(self) -> int: ...
    def __len__(self) -> int: ...
    def push(self, item: object, priority: int = 50, deadline_ms: int | None = None) -> int:
        """Enqueue and return its sequence number; raise ``QueueFullError``
        (``queue_full``) when the queue is at capacity."""
    def pop(self, now_ms: int | None = None) -> tuple[object | None, list[object]]:
        """``(item, expired)``: the best unexpired item (or None when empty)
        and the items skipped because their deadline passed (removed)."""
    def pop_many(
        self, max_items: int, now_ms: int | None = None
    ) -> tuple[list[object], list[object]]:
        """Up to ``max_items`` items in order, plus the expired ones skipped."""
    def remove(self, seq: int) -> bool:
        """Drop a queued item by sequence number (cancellation)."""

# --------------------------------------------------------------------------
# Hashing and dedup (rust/src/hashing.rs)
# --------------------------------------------------------------------------

def blake3_hex(data: _Buffer) -> str:
    """Hex blake3 digest of ``data``."""

def dedup_key(
    agent_id: str, payload: _Buffer, dedup_context: str = "", namespace: str = ""
) -> bytes:
    """32-byte blake3 key of (namespace, agent_id, dedup_context, payload),
    each length-prefixed so distinct tuples never collide by
    concatenation. The payload is hashed in place, without a copy."""

@final
class DedupTable:
    """TTL table of dedup keys -> Python objects, bounded by ``max_entries``
    (oldest evicted first). Thread-safe."""

    def __new__(cls, ttl_s: float, max_entries: int = 1_000_000) -> DedupTable: ...
    def insert_if_absent(
        self, key: bytes, value: object, now: float | None = None
    ) -> tuple[bool, object]:
        """``(True, value)`` if the key was new (now stored), else
        ``(False, existing)`` for a live entry."""
    def get(self, key: bytes, now: float | None = None) -> object | None: ...
    def set(self, key: bytes, value: object, now: float | None = None) -> None:
        """Insert or replace, restarting the TTL."""
    def remove(self, key: bytes) -> bool: ...
    def purge_expired(self, now: float | None = None) -> int: ...
    def __len__(self) -> int: ...

# --------------------------------------------------------------------------
# Latency histograms (rust/src/histogram.rs)
# --------------------------------------------------------------------------

@final
class LatencyHistogram:
    """HDR-style log-linear histogram of latencies in milliseconds with
    bounded memory and ``significant_figures`` of precision. Mergeable.
    Thread-safe."""

    def __new__(
        cls,
        lowest_ms: float = 0.001,
        highest_ms: float = 3_600_000.0,
        significant_figures: int = 3,
    ) -> LatencyHistogram: ...
    def record(self, value_ms: float, count: int = 1) -> None:
        """Values outside the range are clamped into it."""
    def record_many(self, values: Sequence[float]) -> None: ...
    def percentile(self, q: float) -> float:
        """Value at percentile ``q`` in [0, 100] (0.0 when empty)."""
    @property
    def count(self) -> int: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def mean(self) -> float: ...
    @property
    def p50(self) -> float: ...
    @property
    def p99(self) -> float: ...
    @property
    def p999(self) -> float: ...
    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts (same configuration required, else
        ``ValidationError``)."""
    def reset(self) -> None: ...
    def snapshot(self) -> dict[str, float]:
        """``{"count", "min", "max", "mean", "p50", "p99", "p999"}``."""
