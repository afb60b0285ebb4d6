"""Fuzz the frame decoders (atheris): the QUIC receive path and every
native decoder must answer malformed input with an ``AiMeshError`` and
nothing else: no panic, no other exception, no crash.

    python fuzz/fuzz_frames.py -runs=50000 fuzz/corpus      # bounded (tests)
    make fuzz                                                # longer run

The corpus directory is seeded with the golden frames of proto/testdata.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import atheris

with atheris.instrument_imports():
    from aimesh import _native
    from aimesh.errors import AiMeshError

ROUTER = _native.Router()
ROUTER.upsert_endpoint("a", capacity=3)
ROUTER.upsert_endpoint("b", group="gpt-4o", capacity=2, cost_per_1k_tokens=1.0)


def attempt(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; an ``AiMeshError`` is the one allowed failure."""
    try:
        return fn(*args)
    except AiMeshError:
        return None


def use_message(view: _native.MessageView) -> None:
    view.to_dict()
    view.encode()
    attempt(view.validate)


def use_batch(batch: _native.MessageBuffer) -> None:
    for view in batch:
        use_message(view)
    ROUTER.route_batch(batch)


def use_frame(frame: _native.RawFrame) -> None:
    message = attempt(frame.message)
    if message is not None:
        use_message(message)
    batch = attempt(frame.batch)
    if batch is not None:
        use_batch(batch)


def feed_all(decoder: _native.FrameDecoder, pieces: list[bytes]) -> None:
    for piece in pieces:
        for frame in decoder.feed(piece):
            use_frame(frame)
    decoder.finish()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = fdp.ConsumeIntInRange(0, 1 << 16)
    pieces = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) for _ in range(4)]
    pieces.append(fdp.ConsumeBytes(fdp.remaining_bytes()))
    stream = b"".join(pieces)
    # The streaming decoder, fed in pieces as a QUIC stream delivers them.
    attempt(feed_all, _native.FrameDecoder(limit), pieces)
    # The one-shot decoders over the whole input.
    for decode in (_native.decode_frames, _native.decode_batch):
        batch = attempt(decode, stream)
        if batch is not None:
            use_batch(batch)
    message = attempt(_native.decode_message, stream)
    if message is not None:
        use_message(message)
    attempt(ROUTER.route_batch, stream)
    attempt(_native.split_frames, stream, limit)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
