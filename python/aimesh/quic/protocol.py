"""The AiMesh QUIC protocol: ALPN, stream layout and error codes.

Every bidirectional stream a client opens carries length-prefixed protobuf
frames (4-byte big-endian length, then the message)::

    client -> server   StreamHello, then request frames ... [FIN]
    server -> client   one response frame per request frame, same order [FIN]

``StreamHello.kind`` says what the frames are: ``MESSAGES`` (AIMessage in,
Acknowledgment out) or ``BATCHES`` (MessageBatch in, AcknowledgmentBatch
out). A request the pipeline refuses is answered with a ``REJECTED``
acknowledgment carrying its code (and ``retry_after_s`` for backpressure);
the stream goes on. Only a broken stream is reset, with one of the
application error codes below.
"""

from __future__ import annotations

import enum

from aimesh import _native
from aimesh.models import Acknowledgment
from aimesh.proto import aimesh_pb2 as pb2
from aimesh.server import protobuf as pb

#: ALPN protocol id of this protocol.
ALPN = "aimesh/1"
#: Largest StreamHello accepted.
MAX_HELLO_BYTES = 4096


class QuicErrorCode(enum.IntEnum):
    """Application error codes of stream resets and connection closes."""

    NO_ERROR = 0x0
    #: The hello had no valid key (or the server requires one).
    UNAUTHENTICATED = 0x101
    #: A frame announced more than the limit; refused on its header.
    FRAME_TOO_LARGE = 0x102
    #: The stream ended inside a frame.
    TRUNCATED_FRAME = 0x103
    #: The connection already has the maximum number of open streams.
    TOO_MANY_STREAMS = 0x104
    #: This peer already has the maximum number of connections.
    TOO_MANY_CONNECTIONS = 0x105
    #: The first frame was not a valid StreamHello.
    BAD_HELLO = 0x106
    #: The client kept sending while far more answers were pending than
    #: ``quic_max_pending_per_stream`` allows.
    BACKLOG_EXCEEDED = 0x107
    #: The server is shutting down.
    SHUTTING_DOWN = 0x108


#: Error codes of :class:`aimesh.errors.QuicStreamError` by reset code.
RESET_CODES = {
    QuicErrorCode.UNAUTHENTICATED: "unauthenticated",
    QuicErrorCode.FRAME_TOO_LARGE: "frame_too_large",
    QuicErrorCode.TRUNCATED_FRAME: "truncated_frame",
    QuicErrorCode.TOO_MANY_STREAMS: "too_many_streams",
    QuicErrorCode.TOO_MANY_CONNECTIONS: "too_many_connections",
    QuicErrorCode.BAD_HELLO: "bad_hello",
    QuicErrorCode.BACKLOG_EXCEEDED: "backlog_exceeded",
    QuicErrorCode.SHUTTING_DOWN: "shutting_down",
}


def encode_hello(api_key: str = "", *, batches: bool = False, async_mode: bool = False) -> bytes:
    """The framed StreamHello that opens a stream."""
    kind = pb2.STREAM_KIND_BATCHES if batches else pb2.STREAM_KIND_MESSAGES
    hello = pb2.StreamHello(api_key=api_key, kind=kind, async_mode=async_mode)
    return _native.frame(hello.SerializeToString(deterministic=True))


def ack_frame(ack: Acknowledgment) -> bytes:
    return _native.frame(pb.ack_to_protobuf(ack))


def acks_frame(acks: list[Acknowledgment]) -> bytes:
    return _native.frame(pb.acks_to_protobuf(acks))
