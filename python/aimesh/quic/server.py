"""The QUIC server: a thin adapter from streams of frames to the Mesh.

Frames are cut from the received bytes by the native :class:`FrameDecoder`
(no copy unless a frame spans two packets) and decoded into zero-copy views;
a batch is screened and routed by one native call
(:meth:`AiMesh.process_buffer`). Each request is answered in order on the
same stream, through the same pipeline as HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from google.protobuf.message import DecodeError

from aimesh import _native
from aimesh.auth import Authenticator, Principal
from aimesh.config import parse_addr
from aimesh.errors import AiMeshError, FrameError
from aimesh.mesh import AiMesh
from aimesh.models import Acknowledgment, AckStatus, AIMessage
from aimesh.proto import aimesh_pb2 as pb2
from aimesh.quic.protocol import ALPN, MAX_HELLO_BYTES, QuicErrorCode, ack_frame, acks_frame
from aimesh.quic.tls import ensure_certificate

log = logging.getLogger("aimesh.quic")

#: Answers (mostly small refusals) a stream may hold behind a slow head
#: beyond ``quic_max_pending_per_stream`` before a client that ignores
#: backpressure has its stream reset.
BACKLOG_SLACK = 8192
#: Seconds a client should wait after a ``stream_backlog_full`` answer.
BACKLOG_RETRY_AFTER_S = 0.05


class _Stream:
    """One client stream: its decoder, its mode, and its answers in order."""

    __slots__ = (
        "async_mode",
        "batches",
        "decoder",
        "ended",
        "hello",
        "order",
        "principal",
        "unanswered",
    )

    def __init__(self, max_frame: int) -> None:
        self.decoder = _native.FrameDecoder(max_frame)
        self.hello = False
        self.batches = False
        self.async_mode = False
        self.ended = False
        # Answers (encoded frames) in request order; written as the head
        # completes.
        self.order: deque[asyncio.Future[bytes]] = deque()
        self.unanswered = 0
        self.principal = Principal()  # set by the hello


class QuicGateway:
    """Shared state of every connection: the Mesh, the key check, the limits
    and the count of connections per peer."""

    def __init__(self, mesh: AiMesh, auth: Authenticator) -> None:
        self.mesh = mesh
        self.auth = auth
        cfg = mesh.config
        self.max_streams = cfg.quic_max_streams
        self.max_connections_per_peer = cfg.quic_max_connections_per_peer
        self.max_pending = cfg.quic_max_pending_per_stream
        self.message_frame_limit = _native.DEFAULT_MAX_FRAME_BYTES
        self.batch_frame_limit = max(cfg.max_batch_body_bytes, self.message_frame_limit)
        self.peers: dict[str, int] = {}
        self.connections: set[MeshQuicProtocol] = set()
        self.closing = False

    def protocol_factory(self) -> Callable[..., MeshQuicProtocol]:
        def create(*args: Any, **kwargs: Any) -> MeshQuicProtocol:
            return MeshQuicProtocol(*args, gateway=self, **kwargs)

        return create


class MeshQuicProtocol(QuicConnectionProtocol):
    """One QUIC connection."""

    def __init__(self, *args: Any, gateway: QuicGateway, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gw = gateway
        self.streams: dict[int, _Stream] = {}
        # Who opened the connection (the first hello's key); a later hello
        # may name another key for its own stream.
        self.principal: Principal | None = None
        self.peer: str | None = None
        self.peer_addr: str | None = None
        self.highest_stream = -1
        self.background: set[asyncio.Task[None]] = set()
        gateway.connections.add(self)

    # -- events ---------------------------------------------------------------

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.peer_addr is None:
            self.peer_addr = str(addr[0])
        super().datagram_received(data, addr)

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._on_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            # The client gave up on the stream: answers in flight are dropped.
            self.streams.pop(event.stream_id, None)
        elif isinstance(event, events.HandshakeCompleted):
            self._on_handshake()
        elif isinstance(event, events.ConnectionTerminated):
            self._on_terminated()

    def _on_handshake(self) -> None:
        host = self.peer_addr or "?"
        count = self.gw.peers.get(host, 0)
        if count >= self.gw.max_connections_per_peer:
            self._quic.close(
                error_code=QuicErrorCode.TOO_MANY_CONNECTIONS,
                reason_phrase="too many connections from this address",
            )
            self.transmit()
            return
        self.peer = host
        self.gw.peers[host] = count + 1

    def _on_terminated(self) -> None:
        self.gw.connections.discard(self)
        self.streams.clear()
        if self.peer is not None:
            left = self.gw.peers.get(self.peer, 1) - 1
            if left > 0:
                self.gw.peers[self.peer] = left
            else:
                self.gw.peers.pop(self.peer, None)
            self.peer = None

    # -- streams --------------------------------------------------------------

    def _on_data(self, sid: int, data: bytes, end: bool) -> None:
        st = self.streams.get(sid)
        if st is None:
            if sid <= self.highest_stream or sid % 4 != 0:
                return  # a stream we refused or reset, or not client-bidi
            self.highest_stream = sid
            if self.gw.closing:
                self._reset(sid, QuicErrorCode.SHUTTING_DOWN)
                return
            if len(self.streams) >= self.gw.max_streams:
                self._reset(sid, QuicErrorCode.TOO_MANY_STREAMS)
                return
            st = _Stream(self.gw.batch_frame_limit)
            self.streams[sid] = st
        try:
            frames = st.decoder.feed(data) if data else []
            if end:
                st.decoder.finish()
        except FrameError as e:
            code = (
                QuicErrorCode.FRAME_TOO_LARGE
                if e.code == "frame_too_large"
                else QuicErrorCode.TRUNCATED_FRAME
            )
            self._reset(sid, code)
            return
        # Async-mode messages that arrive together are stored together.
        group: list[tuple[asyncio.Future[bytes], AIMessage]] = []
        for frame in frames:
            if not st.hello:
                if not self._on_hello(sid, st, frame):
                    return
                continue
            if len(frame) > st.decoder.max_frame_bytes:
                self._reset(sid, QuicErrorCode.FRAME_TOO_LARGE)
                return
            if not self.gw.auth.still_valid(st.principal):
                # The key was revoked while the stream was open.
                self._reset(sid, QuicErrorCode.UNAUTHENTICATED)
                return
            if len(st.order) >= self.gw.max_pending + BACKLOG_SLACK:
                self._reset(sid, QuicErrorCode.BACKLOG_EXCEEDED)
                return
            if st.async_mode and not st.batches:
                st.order.append(self._join_group(st, frame, group))
            else:
                st.order.append(self._answer(sid, st, frame))
        if group:
            self._submit_group(sid, st, group)
        if end:
            st.ended = True
        self._flush(sid)

    def _on_hello(self, sid: int, st: _Stream, frame: _native.RawFrame) -> bool:
        hello = pb2.StreamHello()
        try:
            if len(frame) > MAX_HELLO_BYTES:
                raise DecodeError("hello too large")
            hello.ParseFromString(frame.tobytes())
        except DecodeError:
            self._reset(sid, QuicErrorCode.BAD_HELLO)
            return False
        if self.principal is None or hello.api_key:
            try:
                st.principal = self.gw.auth.identify(hello.api_key or None)
            except AiMeshError:
                self._reset(sid, QuicErrorCode.UNAUTHENTICATED)
                return False
            if self.principal is None:
                self.principal = st.principal
        else:
            st.principal = self.principal
        st.hello = True
        st.batches = hello.kind == pb2.STREAM_KIND_BATCHES
        st.async_mode = hello.async_mode
        limit = self.gw.batch_frame_limit if st.batches else self.gw.message_frame_limit
        try:
            st.decoder.max_frame_bytes = limit
        except FrameError:
            self._reset(sid, QuicErrorCode.FRAME_TOO_LARGE)
            return False
        return True

    def _answer(self, sid: int, st: _Stream, frame: _native.RawFrame) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        if st.unanswered >= self.gw.max_pending:
            # Backpressure: the client is told to slow down, nothing queues.
            fut: asyncio.Future[bytes] = loop.create_future()
            fut.set_result(_busy_answer(frame, st.batches))
            return fut
        mesh = self.gw.mesh
        try:
            if st.batches:
                batch = frame.batch(self.gw.message_frame_limit)
                if len(batch) > mesh.config.max_batch_messages:
                    raise FrameError(
                        "batch_too_large",
                        f"a batch holds at most {mesh.config.max_batch_messages} messages",
                    )
                coro: Any = _encode_batch(
                    mesh.process_buffer(
                        batch, async_mode=st.async_mode, tenant_id=st.principal.tenant_id
                    )
                )
            else:
                msg = AIMessage.from_view(frame.message())
                msg.tenant_id = st.principal.tenant_id
                coro = _encode_one(mesh.handle(msg, async_mode=st.async_mode))
        except AiMeshError as e:  # malformed protobuf or a field over its limit
            fut = loop.create_future()
            ack = Acknowledgment.rejected("", e)
            fut.set_result(acks_frame([ack]) if st.batches else ack_frame(ack))
            return fut
        task = loop.create_task(coro)
        st.unanswered += 1

        def answered(_t: object) -> None:
            st.unanswered -= 1
            self._flush(sid)

        task.add_done_callback(answered)
        return task

    def _join_group(
        self,
        st: _Stream,
        frame: _native.RawFrame,
        group: list[tuple[asyncio.Future[bytes], AIMessage]],
    ) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if st.unanswered + len(group) >= self.gw.max_pending:
            fut.set_result(_busy_answer(frame, batches=False))
            return fut
        try:
            msg = AIMessage.from_view(frame.message())
            msg.tenant_id = st.principal.tenant_id
            group.append((fut, msg))
        except AiMeshError as e:
            fut.set_result(ack_frame(Acknowledgment.rejected("", e)))
        return fut

    def _submit_group(
        self, sid: int, st: _Stream, group: list[tuple[asyncio.Future[bytes], AIMessage]]
    ) -> None:
        """One durable write for every async message of one read."""
        st.unanswered += len(group)

        async def run() -> None:
            try:
                acks = await self.gw.mesh.submit_many([m for _, m in group])
                for (fut, _), ack in zip(group, acks, strict=True):
                    fut.set_result(ack_frame(ack))
            except Exception as e:  # answered, never left hanging
                for fut, _ in group:
                    if not fut.done():
                        fut.set_exception(e)
            finally:
                st.unanswered -= len(group)
                self._flush(sid)

        task = asyncio.get_running_loop().create_task(run())
        # The loop keeps only weak references to tasks.
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _flush(self, sid: int) -> None:
        """Write every answer at the head of the stream that is ready."""
        st = self.streams.get(sid)
        if st is None:
            return
        out = []
        while st.order and st.order[0].done():
            fut = st.order.popleft()
            try:
                out.append(fut.result())
            except Exception:  # the pipeline answers errors; this is a bug guard
                log.exception("QUIC answer failed on stream %d", sid)
                out.append(ack_frame(_internal_error()))
        fin = st.ended and not st.order
        if out or fin:
            self._quic.send_stream_data(sid, b"".join(out), end_stream=fin)
            self.transmit()
        if fin:
            del self.streams[sid]

    def _reset(self, sid: int, code: QuicErrorCode) -> None:
        self.streams.pop(sid, None)
        try:
            self._quic.reset_stream(sid, int(code))
            self._quic.stop_stream(sid, int(code))
        except (AssertionError, ValueError):  # aioquic: stream already closed
            pass
        self.transmit()


async def _encode_one(answer: Any) -> bytes:
    ack: Acknowledgment = await answer
    return ack_frame(ack)


async def _encode_batch(answer: Any) -> bytes:
    acks: list[Acknowledgment] = await answer
    return acks_frame(acks)


def _busy_answer(frame: _native.RawFrame, batches: bool) -> bytes:
    err = AiMeshError(
        "stream_backlog_full",
        "too many unanswered requests on this stream",
        retry_after=BACKLOG_RETRY_AFTER_S,
    )
    if not batches:
        try:
            mid = frame.message().message_id
        except FrameError:
            mid = ""
        return ack_frame(Acknowledgment.rejected(mid, err))
    try:
        ids = [v.message_id for v in frame.batch()]
    except FrameError:
        ids = [""]
    return acks_frame([Acknowledgment.rejected(m, err) for m in ids])


def _internal_error() -> Acknowledgment:
    return Acknowledgment(
        original_message_id="",
        status=AckStatus.FAILED,
        error="internal server error",
        error_code="internal_error",
    )


class QuicListener:
    """The running QUIC side of ``aimesh serve``."""

    def __init__(self, mesh: AiMesh, auth: Authenticator) -> None:
        self.gateway = QuicGateway(mesh, auth)
        self.server: QuicServer | None = None
        self.certificate: str = ""

    async def start(self) -> None:
        """Listen on ``config.quic_addr`` (UDP) with the configured or a
        self-signed certificate."""
        config = self.gateway.mesh.config
        host, port = parse_addr(config.quic_addr)
        cert, key = ensure_certificate(config.data_dir, config.tls_cert, config.tls_key)
        qc = QuicConfiguration(
            alpn_protocols=[ALPN],
            is_client=False,
            idle_timeout=config.quic_idle_timeout_s,
        )
        qc.load_cert_chain(cert, key)
        self.certificate = str(cert)
        self.server = await serve(
            host, port, configuration=qc, create_protocol=self.gateway.protocol_factory()
        )
        log.info("QUIC (ALPN %s) listening on %s:%d/udp, certificate %s", ALPN, host, port, cert)

    def begin_shutdown(self) -> None:
        """New streams are refused; streams in flight are still answered."""
        self.gateway.closing = True

    async def stop(self) -> None:
        """Close every connection (after the Mesh drained) and the socket."""
        self.begin_shutdown()
        for conn in list(self.gateway.connections):
            conn.close(error_code=QuicErrorCode.NO_ERROR, reason_phrase="server shutting down")
        if self.server is not None:
            # Let the close frames leave before the socket goes.
            await asyncio.sleep(0.05)
            self.server.close()
            self.server = None
