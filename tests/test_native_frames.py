"""Frames, zero-copy views, validation and golden frames through aimesh._native."""

from __future__ import annotations

import itertools
import json
import struct
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimesh import _native
from aimesh.errors import AiMeshError, FrameError, ValidationError
from aimesh.models import AIMessage
from aimesh.proto import aimesh_pb2 as pb2

GOLDEN = Path(__file__).resolve().parent.parent / "proto" / "testdata"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_payload_is_a_zero_copy_view_that_outlives_the_buffer():
    body = AIMessage(agent_id="a", payload=b"x" * 1000).to_protobuf()
    src = frame(body) * 3
    buf = _native.MessageBuffer(src)
    assert len(buf) == 3 and buf.nbytes == len(src)
    view = buf[1]
    payload = view.payload
    assert isinstance(payload, memoryview)
    assert payload.obj is src  # shares the source bytes, no copy
    assert payload.tobytes() == b"x" * 1000
    del buf, src
    assert bytes(view.payload) == b"x" * 1000
    assert view.payload_len == 1000
    assert [v.agent_id for v in _native.decode_frames(frame(body) * 2)] == ["a", "a"]
    assert buf_index_errors()


def buf_index_errors() -> bool:
    buf = _native.decode_frames(b"")
    assert len(buf) == 0
    with pytest.raises(IndexError):
        buf[0]
    return True


def test_bytearray_and_memoryview_inputs_are_copied_once():
    body = AIMessage(agent_id="a", payload=b"hello").to_protobuf()
    data = bytearray(frame(body))
    buf = _native.decode_frames(data)
    data[:] = b"\x00" * len(data)  # mutating the input cannot change the view
    assert bytes(buf[0].payload) == b"hello"
    assert bytes(_native.decode_frames(memoryview(frame(body)))[0].payload) == b"hello"
    with pytest.raises(TypeError):
        _native.decode_frames("not bytes")  # type: ignore[arg-type]


def test_frame_errors_have_codes():
    body = AIMessage(agent_id="a", payload=b"p").to_protobuf()
    with pytest.raises(FrameError) as e:
        _native.decode_frames(frame(body)[:-1])
    assert e.value.code == "truncated_frame"
    with pytest.raises(FrameError) as e:
        _native.decode_frames(b"\x00\x00")
    assert e.value.code == "truncated_frame"
    with pytest.raises(FrameError) as e:
        _native.decode_frames(struct.pack(">I", 10_000_000))
    assert e.value.code == "frame_too_large"
    with pytest.raises(FrameError) as e:
        _native.decode_frames(frame(body), max_frame_bytes=3)
    assert e.value.code == "frame_too_large"
    with pytest.raises(FrameError) as e:
        _native.decode_frames(frame(b"\x0a\x05ab"))
    assert e.value.code == "invalid_protobuf"
    assert isinstance(e.value, AiMeshError) and e.value.status == 400
    with pytest.raises(FrameError):
        _native.decode_message(b"\xff\xff\xff")
    with pytest.raises(FrameError) as e:
        _native.split_frames(b"\x00\x00\x00\x05ab")
    assert e.value.code == "truncated_frame"


def test_split_frames_and_encoders():
    bodies = [b"one", b"", b"three"]
    data = _native.encode_frames(bodies)
    assert data == b"".join(frame(b) for b in bodies)
    views = _native.split_frames(data)
    assert [bytes(v) for v in views] == bodies
    assert views[0].obj is data
    assert _native.frame(b"abc") == frame(b"abc")


def _full_message() -> AIMessage:
    return AIMessage(
        agent_id="agent-1",
        payload=b"\x00\x01payload",
        message_id="m-1",
        estimated_cost_tokens=7,
        budget_tokens=9,
        deadline_ms=2_000_000_000_000,
        task_graph_id="g",
        dependencies=["d1", "d2"],
        priority=0,
        dedup_context="ctx",
        trace_id="t",
        metadata={"model": "gpt-4o", "b": "2", "a": "1"},
        timestamp=123,
    )


def test_native_and_official_protobuf_agree():
    msg = _full_message()
    native = msg.to_protobuf()
    official = pb2.AIMessage()
    official.ParseFromString(native)
    assert official.SerializeToString(deterministic=True) == native
    assert official.HasField("priority") and official.priority == 0
    view = _native.decode_message(official.SerializeToString(deterministic=True))
    d = view.to_dict()
    assert d["metadata"] == {"a": "1", "b": "2", "model": "gpt-4o"}
    assert d["dependencies"] == ["d1", "d2"]
    assert d["payload"] == b"\x00\x01payload"
    assert view.encode() == native
    assert AIMessage.from_view(view) == msg
    absent = _native.decode_message(pb2.AIMessage(agent_id="a", payload=b"x").SerializeToString())
    assert (absent.priority, absent.budget_tokens, absent.deadline_ms) == (None, None, None)


text = st.text(max_size=20)
messages = st.builds(
    pb2.AIMessage,
    agent_id=text,
    message_id=text,
    payload=st.binary(max_size=300),
    estimated_cost_tokens=st.none() | st.integers(0, 2**64 - 1),
    budget_tokens=st.none() | st.integers(0, 2**64 - 1),
    deadline_ms=st.none() | st.integers(0, 2**64 - 1),
    task_graph_id=text,
    dependencies=st.lists(text, max_size=4),
    priority=st.none() | st.integers(0, 2**32 - 1),
    dedup_context=text,
    trace_id=text,
    metadata=st.dictionaries(text, text, max_size=4),
    timestamp=st.integers(0, 2**64 - 1),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_roundtrip_against_the_official_library(m):
    data = m.SerializeToString(deterministic=True)
    view = _native.decode_message(data)
    again = pb2.AIMessage()
    again.ParseFromString(view.encode())
    assert again == m
    # Canonical form: map entries sorted by key. upb's "deterministic" map
    # order is its own (not lexicographic), so bytes are compared only when
    # there is no ordering to disagree on.
    if len(m.metadata) <= 1:
        assert view.encode() == data
    assert _native.decode_message(view.encode()).encode() == view.encode()
    assert view.agent_id == m.agent_id
    assert bytes(view.payload) == m.payload
    assert view.priority == (m.priority if m.HasField("priority") else None)
    assert view.metadata == dict(m.metadata)
    assert view.dependencies == list(m.dependencies)
    buf = _native.decode_frames(frame(data) * 2)
    assert buf[1].encode() == view.encode()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data):
    for fn in (_native.decode_frames, _native.decode_message, _native.split_frames):
        try:
            fn(data)
        except FrameError as e:
            assert e.code in ("truncated_frame", "frame_too_large", "invalid_protobuf")


def _golden() -> list[dict]:
    return json.loads((GOLDEN / "manifest.json").read_text())["golden"]


@pytest.mark.parametrize("entry", _golden(), ids=lambda e: e["file"])
def test_golden_frames_reencode_byte_identically(entry):
    data = (GOLDEN / entry["file"]).read_bytes()
    doc = json.loads((GOLDEN / entry["file"].replace(".bin", ".json")).read_text())
    assert doc["frame_hex"] == data.hex()
    bodies = [bytes(v) for v in _native.split_frames(data)]
    assert len(bodies) == entry["frames"]
    cls = getattr(pb2, entry["type"])
    again = []
    for body, described in zip(bodies, doc["frames"], strict=True):
        assert body.hex() == described["body_hex"]
        parsed = cls()
        parsed.ParseFromString(body)
        again.append(parsed.SerializeToString(deterministic=True))
        if entry["type"] == "AIMessage":
            assert _native.decode_message(body).encode() == body
    assert _native.encode_frames(again) == data
    if entry["type"] == "AIMessage":
        assert b"".join(frame(v.encode()) for v in _native.decode_frames(data)) == data


NOW = 1_700_000_000_000
RULES = [
    (dict(agent_id="", payload_len=1), "invalid_agent_id"),
    (dict(agent_id="Agent", payload_len=1), "invalid_agent_id"),
    (dict(agent_id="a.b", payload_len=1), "invalid_agent_id"),
    (dict(agent_id="a", payload_len=0), "payload_required"),
    (dict(agent_id="a", payload_len=1024 * 1024 + 1), "payload_too_large"),
    (dict(agent_id="a", payload_len=1, budget_tokens=0), "invalid_budget_tokens"),
    (dict(agent_id="a", payload_len=1, budget_tokens=-1), "invalid_budget_tokens"),
    (dict(agent_id="a", payload_len=1, deadline_ms=NOW), "deadline_in_past"),
    (dict(agent_id="a", payload_len=1, deadline_ms=-5), "deadline_in_past"),
    (dict(agent_id="a", payload_len=1, priority=101), "invalid_priority"),
    (dict(agent_id="a", payload_len=1, priority=-1), "invalid_priority"),
]


@pytest.mark.parametrize(("fields", "code"), RULES, ids=[c for _, c in RULES])
def test_each_validation_rule_has_its_code(fields, code):
    with pytest.raises(ValidationError) as e:
        _native.validate_fields(**fields, now_ms=NOW)
    assert e.value.code == code


def test_valid_messages_pass_and_views_validate():
    _native.validate_fields("my-agent_1", 1024 * 1024, 1, NOW + 1, 100, now_ms=NOW)
    _native.validate_fields("a", 1, None, None, 0, now_ms=NOW)
    past = AIMessage(agent_id="a", payload=b"x", deadline_ms=1000).to_protobuf()
    with pytest.raises(ValidationError) as e:
        _native.decode_message(past).validate()
    assert e.value.code == "deadline_in_past"
    future = AIMessage(agent_id="a", payload=b"x", deadline_ms=int(time.time() * 1000) + 60_000)
    _native.decode_message(future.to_protobuf()).validate()
    assert _native.REJECTION_CODES[0] == "routed"
    assert _native.MAX_PAYLOAD_BYTES == 1024 * 1024
    assert sys.getrefcount(_native) > 0


# -- streams and batches (the QUIC receive path) ----------------------------------


def _bodies(n: int) -> list[bytes]:
    return [
        _native.encode_message(agent_id=f"a{i}", payload=bytes([i]) * (i + 1)) for i in range(n)
    ]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 12), cuts=st.lists(st.integers(0, 400), max_size=20))
def test_frame_decoder_gives_the_same_frames_however_the_stream_is_cut(n, cuts):
    bodies = _bodies(n)
    stream = _native.encode_frames(bodies)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = _native.FrameDecoder()
    got: list[bytes] = []
    for a, b in itertools.pairwise(points):
        got += [f.tobytes() for f in decoder.feed(stream[a:b])]
    decoder.finish()
    assert got == bodies
    assert decoder.pending_bytes == 0


def test_frame_decoder_views_are_zero_copy_and_decode():
    stream = _native.encode_frames(_bodies(3))
    frames = _native.FrameDecoder().feed(stream)
    view = frames[2].view()
    assert view.obj is stream  # a window on the bytes that arrived
    assert bytes(frames[2].message().payload) == b"\x02\x02\x02"
    assert len(frames[2]) == len(_bodies(3)[2])


def test_frame_decoder_refuses_on_the_header_and_stays_refused():
    decoder = _native.FrameDecoder(100)
    assert decoder.feed(b"\x00\x00") == []
    with pytest.raises(FrameError) as err:
        decoder.feed(b"\x00\x65")  # 101 bytes announced, body never sent
    assert err.value.code == "frame_too_large"
    with pytest.raises(FrameError):
        decoder.feed(_native.frame(b"x"))


def test_frame_decoder_limit_can_be_lowered_mid_frame_and_truncation_is_reported():
    decoder = _native.FrameDecoder(1000)
    decoder.feed(struct.pack(">I", 500) + b"x" * 10)
    with pytest.raises(FrameError) as err:
        decoder.max_frame_bytes = 100
    assert err.value.code == "frame_too_large"

    decoder = _native.FrameDecoder()
    decoder.feed(_native.frame(b"abc")[:-1])
    with pytest.raises(FrameError) as err:
        decoder.finish()
    assert err.value.code == "truncated_frame"


def test_batches_encode_and_decode_like_the_official_library():
    bodies = _bodies(5)
    data = _native.encode_batch(bodies)
    official = pb2.MessageBatch()
    official.ParseFromString(data)
    assert [m.SerializeToString(deterministic=True) for m in official.messages] == bodies
    buf = _native.decode_batch(data)
    assert [v.encode() for v in buf] == bodies
    assert buf[4].payload.obj is data  # zero copy
    golden = (GOLDEN / "message_batch.bin").read_bytes()
    (frame,) = _native.FrameDecoder().feed(golden)
    assert [v.agent_id for v in frame.batch()] == ["a", "agent_ü-free"]
    with pytest.raises(FrameError):
        _native.decode_batch(b"\x0a\x05\x01")
    with pytest.raises(FrameError) as err:
        _native.decode_batch(data, max_frame_bytes=4)
    assert err.value.code == "frame_too_large"


def test_route_batch_accepts_a_decoded_buffer():
    router = _native.Router()
    router.upsert_endpoint("a", capacity=1000)
    router.upsert_endpoint("b", capacity=1000, cost_per_1k_tokens=5.0)
    bodies = [*_bodies(50), _native.encode_message(agent_id="BAD", payload=b"x")]
    from_frames = router.route_batch(_native.encode_frames(bodies))
    from_buffer = router.route_batch(_native.decode_batch(_native.encode_batch(bodies)))
    assert bytes(from_frames.indices) == bytes(from_buffer.indices)
    assert from_buffer.rejections == {"invalid_agent_id": 1}
