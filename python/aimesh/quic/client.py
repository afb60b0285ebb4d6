"""The QUIC client: :class:`QuicClient`.

It keeps a small pool of connections to one server and opens a stream per
call (streams are cheap; the handshake is paid once per connection).
:meth:`QuicClient.stream` pipelines many messages on one stream: frames go
out as fast as flow control allows and acknowledgments come back in order.

A connection that has been quiet for a while is probed with a PING before
use, so a client notices a server that restarted (or died) within a second
and reconnects instead of waiting for the idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from aimesh import _native
from aimesh.errors import AiMeshError, FrameError, TransportError, error_for_code
from aimesh.models import Acknowledgment, AckStatus, AIMessage
from aimesh.quic.protocol import ALPN, RESET_CODES, QuicErrorCode, encode_hello
from aimesh.server import protobuf as pb

#: Messages per MessageBatch frame in :meth:`QuicClient.send_batch` (the
#: server's default ``max_batch_messages``).
BATCH_FRAME_MESSAGES = 1000
#: A connection quiet for longer than this is pinged before reuse.
PROBE_AFTER_IDLE_S = 1.0
#: Largest answer frame accepted: an ack carries the upstream's reply, and a
#: batch answer up to 1000 of them.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_BATCH_ANSWER_BYTES = 1024 * 1024 * 1024
#: Frames written per send call when pipelining.
WRITE_CHUNK = 64


class _Inbox:
    """Frames received on one stream, and how it ended."""

    __slots__ = ("decoder", "ended", "error", "frames", "wakeup")

    def __init__(self, max_frame: int) -> None:
        self.decoder = _native.FrameDecoder(max_frame)
        self.frames: deque[_native.RawFrame] = deque()
        self.wakeup = asyncio.Event()
        self.error: AiMeshError | None = None
        self.ended = False

    def fail(self, error: AiMeshError) -> None:
        if self.error is None:
            self.error = error
        self.wakeup.set()

    async def next(self) -> _native.RawFrame:
        while not self.frames:
            if self.error is not None:
                raise self.error
            if self.ended:
                raise TransportError("stream_closed", "the server closed the stream early")
            self.wakeup.clear()
            await self.wakeup.wait()
        return self.frames.popleft()


class _ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inboxes: dict[int, _Inbox] = {}
        self.last_heard = asyncio.get_running_loop().time()
        self.terminated = False

    def quic_event_received(self, event: events.QuicEvent) -> None:
        self.last_heard = self._loop.time()
        if isinstance(event, events.StreamDataReceived):
            box = self.inboxes.get(event.stream_id)
            if box is None:
                return
            try:
                box.frames.extend(box.decoder.feed(event.data))
                if event.end_stream:
                    box.decoder.finish()
                    box.ended = True
            except FrameError as e:
                box.fail(e)
            box.wakeup.set()
        elif isinstance(event, events.StreamReset):
            box = self.inboxes.get(event.stream_id)
            if box is not None:
                box.fail(_reset_error(event.error_code))
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = True
            err = (
                _reset_error(event.error_code)
                if event.error_code in RESET_CODES
                else TransportError(
                    "connection_lost", f"connection closed: {event.reason_phrase or 'no reason'}"
                )
            )
            for box in self.inboxes.values():
                box.fail(err)

    def open_stream(self, max_frame: int) -> tuple[int, _Inbox]:
        sid = self._quic.get_next_available_stream_id()
        # Creating the stream reserves its id before any await lets another
        # caller ask for one.
        self._quic.send_stream_data(sid, b"")
        box = _Inbox(max_frame)
        self.inboxes[sid] = box
        return sid, box

    def write(self, sid: int, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(sid, data, end_stream=end)
        self.transmit()

    def abandon(self, sid: int) -> None:
        """Forget a stream; stop it first if it did not end cleanly (timeout,
        cancellation, error)."""
        box = self.inboxes.pop(sid, None)
        if box is not None and box.ended and box.error is None and not box.frames:
            return
        if not self.terminated:
            with contextlib.suppress(Exception):
                self._quic.reset_stream(sid, int(QuicErrorCode.NO_ERROR))
                self._quic.stop_stream(sid, int(QuicErrorCode.NO_ERROR))
                self.transmit()


def _reset_error(code: int) -> AiMeshError:
    name = RESET_CODES.get(QuicErrorCode(code)) if code in RESET_CODES else None
    if name is None:
        return TransportError("stream_reset", f"the server reset the stream (code {code:#x})")
    return error_for_code(name, f"the server reset the stream: {name.replace('_', ' ')}")


class QuicClient:
    """Async client of the AiMesh QUIC transport.

    >>> async with QuicClient("127.0.0.1", 9001, cafile=".aimesh-data/quic-cert.pem") as c:
    ...     ack = await c.send(Message(agent_id="my-agent", payload=b"hi"))

    ``cafile`` pins the server's certificate (the self-signed one in the
    server's data directory) or names a CA bundle; ``verify=False`` skips
    verification (tests on loopback only). ``connections`` is the size of the
    pool. ``send`` raises the matching :mod:`aimesh.errors` exception when the
    message is refused, like the HTTP SDK; batches and streams answer
    ``rejected`` acknowledgments instead.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9001,
        *,
        api_key: str | None = None,
        cafile: str | None = None,
        verify: bool = True,
        server_name: str | None = None,
        connections: int = 1,
        timeout: float = 60.0,
        idle_timeout: float = 60.0,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.host, self.port = host, port
        self.api_key = api_key or ""
        self.timeout = timeout
        self._config = QuicConfiguration(
            alpn_protocols=[ALPN],
            is_client=True,
            idle_timeout=idle_timeout,
            server_name=server_name or host,
        )
        if not verify:
            self._config.verify_mode = ssl.CERT_NONE
        elif cafile:
            self._config.load_verify_locations(cafile)
        self._pool: list[tuple[_ClientProtocol, contextlib.AsyncExitStack] | None] = [
            None
        ] * connections
        self._next = 0
        self._lock = asyncio.Lock()
        self.reconnects = 0

    async def __aenter__(self) -> QuicClient:
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every pooled connection."""
        for i, entry in enumerate(self._pool):
            if entry is not None:
                self._pool[i] = None
                with contextlib.suppress(Exception):
                    await entry[1].aclose()

    # -- public calls ----------------------------------------------------------

    async def send(self, message: AIMessage, *, async_mode: bool = False) -> Acknowledgment:
        """Send one message on a stream of its own and answer its ack
        (``async_mode=True``: ``received`` once the message is on disk)."""
        ack = (await self._exchange([message.to_protobuf()], False, async_mode))[0]
        if ack.status is AckStatus.REJECTED:
            raise error_for_code(ack.error_code, ack.error, retry_after=ack.retry_after_s or None)
        return ack

    async def send_batch(
        self, messages: Sequence[AIMessage], *, async_mode: bool = False
    ) -> list[Acknowledgment]:
        """Send many messages as MessageBatch frames (up to 1000 messages
        each) pipelined on one stream; one ack per message, in order."""
        bodies = []
        for start in range(0, len(messages), BATCH_FRAME_MESSAGES):
            chunk = messages[start : start + BATCH_FRAME_MESSAGES]
            bodies.append(_native.encode_batch([m.to_protobuf() for m in chunk]))
        return await self._exchange(bodies, True, async_mode)

    async def stream(
        self,
        messages: Iterable[AIMessage] | AsyncIterable[AIMessage],
        *,
        async_mode: bool = False,
    ) -> AsyncIterator[Acknowledgment]:
        """Pipeline messages on one stream: they are written without waiting
        for answers; acks are yielded in order as they arrive."""
        proto = await self._connection()
        sid, box = proto.open_stream(MAX_ANSWER_BYTES)
        sent = 0

        async def writer() -> None:
            nonlocal sent
            proto.write(sid, encode_hello(self.api_key, async_mode=async_mode))
            chunk: list[bytes] = []
            async for m in _aiter(messages):
                chunk.append(_native.frame(m.to_protobuf()))
                sent += 1
                if len(chunk) >= WRITE_CHUNK:
                    proto.write(sid, b"".join(chunk))
                    chunk.clear()
                    await asyncio.sleep(0)  # let acks in while writing
            proto.write(sid, b"".join(chunk), end=True)

        task = asyncio.create_task(writer())
        received = 0
        try:
            while not task.done() or received < sent:
                frame = await self._next_frame(box, task)
                if frame is None:
                    continue
                received += 1
                yield pb.ack_from_protobuf(frame.tobytes())
            task.result()
        finally:
            if not task.done():
                task.cancel()
            proto.abandon(sid)

    # -- plumbing -------------------------------------------------------------

    async def _exchange(
        self, bodies: list[bytes], batches: bool, async_mode: bool
    ) -> list[Acknowledgment]:
        proto = await self._connection()
        sid, box = proto.open_stream(MAX_BATCH_ANSWER_BYTES if batches else MAX_ANSWER_BYTES)
        try:
            out = [encode_hello(self.api_key, batches=batches, async_mode=async_mode)]
            out.extend(_native.frame(b) for b in bodies)
            proto.write(sid, b"".join(out), end=True)
            acks: list[Acknowledgment] = []
            for _ in bodies:
                frame = await asyncio.wait_for(box.next(), self.timeout)
                if batches:
                    acks.extend(pb.acks_from_protobuf(frame.tobytes()))
                else:
                    acks.append(pb.ack_from_protobuf(frame.tobytes()))
            return acks
        except TimeoutError:
            raise TransportError("timeout", f"no answer within {self.timeout:g}s") from None
        finally:
            proto.abandon(sid)

    async def _next_frame(self, box: _Inbox, writer: asyncio.Task[None]) -> _native.RawFrame | None:
        """The next frame, or None when only the writer finished (so the
        caller can re-check how many answers it still expects)."""
        reader = asyncio.ensure_future(box.next())
        done, _ = await asyncio.wait(
            {reader, writer} if not writer.done() else {reader},
            timeout=self.timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if reader in done:
            return reader.result()
        reader.cancel()
        if not done:
            raise TransportError("timeout", f"no answer within {self.timeout:g}s")
        writer.result()  # re-raise a writer failure
        return None

    async def _connection(self) -> _ClientProtocol:
        """A live pooled connection (round robin), reconnecting when one was
        closed or no longer answers."""
        async with self._lock:
            i = self._next
            self._next = (i + 1) % len(self._pool)
            entry = self._pool[i]
            if entry is not None and not await self._alive(entry[0]):
                self._pool[i] = None
                with contextlib.suppress(Exception):
                    await entry[1].aclose()
                entry = None
                self.reconnects += 1
            if entry is None:
                entry = await self._open()
                self._pool[i] = entry
            return entry[0]

    async def _alive(self, proto: _ClientProtocol) -> bool:
        if proto.terminated:
            return False
        if proto._loop.time() - proto.last_heard < PROBE_AFTER_IDLE_S:
            return True
        try:
            await asyncio.wait_for(proto.ping(), PROBE_AFTER_IDLE_S)
        except (TimeoutError, ConnectionError):
            return False
        return True

    async def _open(self) -> tuple[_ClientProtocol, contextlib.AsyncExitStack]:
        stack = contextlib.AsyncExitStack()
        try:
            proto = await asyncio.wait_for(
                stack.enter_async_context(
                    connect(
                        self.host,
                        self.port,
                        configuration=self._config,
                        create_protocol=_ClientProtocol,
                    )
                ),
                self.timeout,
            )
        except (TimeoutError, ConnectionError, OSError) as e:
            await stack.aclose()
            raise TransportError(
                "connect_failed", f"cannot reach {self.host}:{self.port} over QUIC: {e!r}"
            ) from None
        assert isinstance(proto, _ClientProtocol)
        return proto, stack


async def _aiter(items: Iterable[AIMessage] | AsyncIterable[AIMessage]) -> AsyncIterator[AIMessage]:
    if isinstance(items, AsyncIterable):
        async for m in items:
            yield m
    else:
        for m in items:
            yield m
