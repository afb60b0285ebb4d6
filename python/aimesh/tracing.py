"""W3C Trace Context: read ``traceparent`` from clients, pass it upstream.

AiMesh's ``trace_id`` (in messages, acks and logs) is the 32-hex-digit trace
id of the W3C header, so a trace started by an agent continues through the
gateway to the model endpoint.
"""

from __future__ import annotations

import os
import re

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def trace_id_from(traceparent: str | None) -> str | None:
    """The trace id of a valid ``traceparent`` header, else None (an
    invalid header is ignored, as the specification asks)."""
    if not traceparent:
        return None
    m = _TRACEPARENT.match(traceparent.strip().lower())
    if m is None or m.group(1) == "ff":
        return None
    trace_id = m.group(2)
    if trace_id == "0" * 32 or m.group(3) == "0" * 16:
        return None
    return trace_id


def new_trace_id() -> str:
    return os.urandom(16).hex()


def child_traceparent(trace_id: str) -> str | None:
    """A ``traceparent`` for an upstream call within ``trace_id`` (a new
    span id, sampled); None when ``trace_id`` is not a W3C trace id."""
    if not _TRACE_ID.match(trace_id) or trace_id == "0" * 32:
        return None
    return f"00-{trace_id}-{os.urandom(8).hex()}-01"
