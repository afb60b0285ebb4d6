"""Logging: JSON lines for the server, one line per finished message.

``aimesh serve`` writes every log record as one JSON object per line
(``AIMESH_LOG_FORMAT=text`` for the classic format); the level comes from
``AIMESH_LOG_LEVEL``. Each message that went through the pipeline is logged
once by ``aimesh.messages`` with its id, agent, endpoint, status, tokens,
latency and trace id -- never its payload, never a key.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import Any

import orjson

from aimesh.models import Acknowledgment

MESSAGES = logging.getLogger("aimesh.messages")

# Attributes every LogRecord has (and uvicorn's terminal-colour copy of the
# message); anything else was passed in ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the
    ``extra`` fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(*, json_lines: bool, level: str | None = None) -> None:
    """Set up the root logger (stderr) once for the process."""
    level = (level or os.environ.get("AIMESH_LOG_LEVEL", "INFO")).upper()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_message(message_id: str, agent_id: str, ack: Acknowledgment) -> None:
    """The one log line of a finished message (a duplicate names the message
    whose answer it got)."""
    if MESSAGES.isEnabledFor(logging.INFO):
        MESSAGES.info(
            "message %s",
            ack.status.value,
            extra={
                "message_id": message_id,
                "duplicate_of": (
                    ack.original_message_id if ack.original_message_id != message_id else None
                ),
                "agent_id": agent_id,
                "endpoint_id": ack.endpoint_id or None,
                "status": ack.status.value,
                "tokens": ack.tokens_used,
                "latency_ms": round(ack.processing_latency_ms, 3),
                "error_code": ack.error_code or None,
                "trace_id": ack.trace_id or None,
            },
        )
