"""QUIC transport: length-prefixed protobuf frames over aioquic (ALPN
``aimesh/1``). See :mod:`aimesh.quic.protocol` for the stream layout."""

from aimesh.quic.client import QuicClient
from aimesh.quic.protocol import ALPN, QuicErrorCode
from aimesh.quic.server import QuicListener

__all__ = ["ALPN", "QuicClient", "QuicErrorCode", "QuicListener"]
