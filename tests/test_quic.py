"""The QUIC transport of a real gateway process over loopback: round trips,
golden frames, malformed input, pipelining, limits, auth, reconnection and
the SDK's ``transport="quic"``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aimesh import AiMeshClient, AIMessage, AsyncAiMeshClient, _native
from aimesh.errors import (
    AuthenticationError,
    FrameError,
    RateLimitError,
    TransportError,
    ValidationError,
)
from aimesh.models import AckStatus
from aimesh.proto import aimesh_pb2 as pb2
from aimesh.quic import QuicClient, QuicErrorCode
from aimesh.quic.protocol import encode_hello
from aimesh.server import protobuf as pb
from tests.gateway import Gateway, Sim, make_gateway, start_sim
from tests.quic_raw import raw_connection

GOLDEN = Path(__file__).resolve().parent.parent / "proto" / "testdata"
FAST_LIMITS = {"rate_limit_rps": 100000.0}


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = start_sim()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gw(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the tests that do not change its settings: endpoints
    in the default group and in the groups the golden messages name."""
    endpoints = [
        {"endpoint_id": "sim", "url": sim.url, "kind": "openai"},
        {"endpoint_id": "sim-4o", "url": sim.url, "kind": "openai", "group": "gpt-4o"},
        {"endpoint_id": "sim-llama", "url": sim.url, "kind": "openai", "group": "llama-3"},
    ]
    g = make_gateway(tmp_path_factory.mktemp("quic"), endpoints, limits=FAST_LIMITS).start()
    yield g
    g.stop()


def client(g: Gateway, **kw: object) -> QuicClient:
    return QuicClient("127.0.0.1", g.quic_port, cafile=str(g.certificate), **kw)  # type: ignore[arg-type]


def msg(i: int, agent: str = "quic-agent", **kw: object) -> AIMessage:
    """A message with a payload no other test sends (no dedup hits)."""
    payload = f"message {i} {uuid.uuid4()}".encode()
    return AIMessage(agent_id=agent, payload=payload, **kw)  # type: ignore[arg-type]


def framed(*bodies: bytes) -> bytes:
    return b"".join(_native.frame(b) for b in bodies)


def acks_of(data: bytes) -> list[pb2.Acknowledgment]:
    return [pb.ack_from_protobuf(bytes(v)) for v in _native.split_frames(data)]  # type: ignore[misc]


# -- round trips --------------------------------------------------------------


async def test_single_and_batched_round_trip(gw: Gateway) -> None:
    async with client(gw) as c:
        ack = await c.send(msg(0))
        assert ack.status is AckStatus.SUCCESS
        assert ack.endpoint_id == "sim" and ack.tokens_used > 0

        batch = [msg(i) for i in range(1, 251)]
        acks = await c.send_batch(batch)
        assert [a.original_message_id for a in acks] == [m.message_id for m in batch]
        assert {a.status for a in acks} == {AckStatus.SUCCESS}


async def test_async_mode_acks_received_then_delivers(gw: Gateway) -> None:
    batch = [msg(i, agent="quic-async") for i in range(20)]
    async with client(gw) as c:
        acks = await c.send_batch(batch, async_mode=True)
    assert {a.status for a in acks} == {AckStatus.RECEIVED}
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for m in batch:
            for _ in range(200):
                body = http.get(f"/messages/{m.message_id}").json()
                if body["status"] != "received":
                    break
                time.sleep(0.05)
            assert body["status"] == "success", body


async def test_refused_message_raises_like_http(gw: Gateway) -> None:
    async with client(gw) as c:
        with pytest.raises(Exception) as err:
            await c.send(AIMessage(agent_id="Bad Agent", payload=b"x"))
    assert getattr(err.value, "code", None) == "invalid_agent_id"


# -- golden frames --------------------------------------------------------------


async def test_golden_frames_over_quic(gw: Gateway) -> None:
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    messages = [g for g in manifest["golden"] if g["type"] == "AIMessage"]
    async with raw_connection(gw.quic_port, str(gw.certificate)) as conn:
        for g in messages:
            frames = (GOLDEN / g["file"]).read_bytes()
            sid = conn.open()
            conn.write(sid, encode_hello() + frames, end=True)
            r = await conn.result(sid)
            assert r.ended and r.reset_code is None, g["file"]
            acks = acks_of(bytes(r.data))
            assert len(acks) == g["frames"], g["file"]
            sent = [_native.decode_message(bytes(v)) for v in _native.split_frames(frames)]
            for view, ack in zip(sent, acks, strict=True):
                if view.message_id:
                    assert ack.original_message_id == view.message_id
                try:
                    view.validate()
                except ValidationError as e:
                    assert ack.status is AckStatus.REJECTED, (g["file"], ack)
                    assert ack.error_code == e.code
                else:
                    assert ack.status in (AckStatus.SUCCESS, AckStatus.DUPLICATE), (g["file"], ack)

        # The golden MessageBatch: the second message's agent id is not valid.
        sid = conn.open()
        batch = (GOLDEN / "message_batch.bin").read_bytes()
        conn.write(sid, encode_hello(batches=True) + batch, end=True)
        r = await conn.result(sid)
        (answer,) = _native.split_frames(bytes(r.data))
        acks = pb.acks_from_protobuf(bytes(answer))
        # (the first one repeats message_minimal: a duplicate by now)
        assert acks[0].status in (AckStatus.SUCCESS, AckStatus.DUPLICATE)
        assert acks[1].status is AckStatus.REJECTED
        assert acks[1].error_code == "invalid_agent_id"


# -- malformed input ------------------------------------------------------------


async def test_invalid_protobuf_is_answered_and_the_stream_goes_on(gw: Gateway) -> None:
    good = msg(1).to_protobuf()
    async with raw_connection(gw.quic_port) as conn:
        sid = conn.open()
        conn.write(sid, encode_hello() + framed(b"\xff\xff\xff", good), end=True)
        r = await conn.result(sid)
        first, second = acks_of(bytes(r.data))
        assert first.status is AckStatus.REJECTED and first.error_code == "invalid_protobuf"
        assert second.status is AckStatus.SUCCESS


async def test_oversized_frame_is_refused_on_its_header(gw: Gateway) -> None:
    async with raw_connection(gw.quic_port) as conn:
        big = conn.open()
        # Announce 100 MiB and send only the header: the reset must come
        # without the body ever being sent.
        conn.write(big, encode_hello() + (100 * 1024 * 1024).to_bytes(4, "big"))
        r = await conn.result(big)
        assert r.reset_code == QuicErrorCode.FRAME_TOO_LARGE

        # The connection still serves other streams.
        ok = conn.open()
        conn.write(ok, encode_hello() + framed(msg(2).to_protobuf()), end=True)
        r = await conn.result(ok)
        (ack,) = acks_of(bytes(r.data))
        assert ack.status is AckStatus.SUCCESS


async def test_truncated_frame_resets_after_earlier_answers(gw: Gateway) -> None:
    body = msg(3).to_protobuf()
    async with raw_connection(gw.quic_port) as conn:
        sid = conn.open()
        conn.write(sid, encode_hello() + _native.frame(body)[:-3], end=True)
        r = await conn.result(sid)
        assert r.reset_code == QuicErrorCode.TRUNCATED_FRAME


async def test_bad_hello_resets_the_stream(gw: Gateway) -> None:
    async with raw_connection(gw.quic_port) as conn:
        sid = conn.open()
        conn.write(sid, framed(b"\xff\xff"), end=True)
        r = await conn.result(sid)
        assert r.reset_code == QuicErrorCode.BAD_HELLO


async def test_client_reports_frame_errors(gw: Gateway) -> None:
    huge = AIMessage(agent_id="quic-agent", payload=b"x" * (_native.MAX_PAYLOAD_BYTES + 70_000))
    async with client(gw) as c:
        with pytest.raises(FrameError) as err:
            await c.send(huge)
        assert err.value.code == "frame_too_large"
        assert (await c.send(msg(4))).status is AckStatus.SUCCESS


# -- pipelining and concurrency -------------------------------------------------


async def test_thousand_messages_pipelined_on_one_stream_in_order(gw: Gateway) -> None:
    batch = [msg(i, agent="quic-pipe") for i in range(1000)]
    async with client(gw) as c:
        acks = [a async for a in c.stream(batch)]
    assert [a.original_message_id for a in acks] == [m.message_id for m in batch]
    assert {a.status for a in acks} == {AckStatus.SUCCESS}


async def test_pipelined_async_messages_are_stored_and_delivered(gw: Gateway) -> None:
    batch = [msg(i, agent="quic-pipe-async") for i in range(300)]
    async with client(gw) as c:
        acks = [a async for a in c.stream(batch, async_mode=True)]
    assert [a.original_message_id for a in acks] == [m.message_id for m in batch]
    assert {a.status for a in acks} == {AckStatus.RECEIVED}
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        last = batch[-1].message_id
        for _ in range(200):
            if http.get(f"/messages/{last}").json()["status"] == "success":
                break
            time.sleep(0.05)
        assert http.get(f"/messages/{last}").json()["status"] == "success"


async def test_reused_message_id_with_another_body_conflicts_in_a_batch(gw: Gateway) -> None:
    first = msg(1, agent="quic-conflict")
    clash = AIMessage(agent_id="quic-conflict", payload=b"other body", message_id=first.message_id)
    async with client(gw) as c:
        acks = await c.send_batch([first, clash, first], async_mode=True)
    assert [a.status for a in acks] == [AckStatus.RECEIVED, AckStatus.REJECTED, AckStatus.RECEIVED]
    assert acks[1].error_code == "message_id_conflict"


async def test_many_concurrent_streams(gw: Gateway) -> None:
    async with client(gw, connections=2) as c:
        acks = await asyncio.gather(*(c.send(msg(i, agent="quic-conc")) for i in range(200)))
    assert {a.status for a in acks} == {AckStatus.SUCCESS}
    assert len({a.original_message_id for a in acks}) == 200


# -- limits, auth, reconnection (gateways of their own) -----------------------------


def test_stream_and_connection_limits(sim: Sim, tmp_path: Path) -> None:
    g = make_gateway(
        tmp_path,
        [{"endpoint_id": "sim", "url": sim.url, "kind": "openai"}],
        limits={**FAST_LIMITS, "quic_max_streams": 2, "quic_max_connections_per_peer": 2},
    ).start()

    async def scenario() -> None:
        async with raw_connection(g.quic_port) as conn:
            # Two streams held open (hello + half a frame), a third refused.
            held = [conn.open(), conn.open()]
            for sid in held:
                conn.write(sid, encode_hello() + b"\x00\x00")
            await asyncio.sleep(0.2)
            third = conn.open()
            conn.write(third, encode_hello() + framed(msg(1).to_protobuf()), end=True)
            r = await conn.result(third)
            assert r.reset_code == QuicErrorCode.TOO_MANY_STREAMS

            async with (
                raw_connection(g.quic_port) as second,
                raw_connection(g.quic_port) as third_conn,
            ):
                await asyncio.sleep(0.3)
                assert third_conn.closed_code == QuicErrorCode.TOO_MANY_CONNECTIONS
                assert second.closed_code is None

    try:
        asyncio.run(scenario())
    finally:
        g.stop()


def test_backpressure_answers_retry_after(tmp_path: Path) -> None:
    slow = start_sim("--latency-ms", "300")
    g = make_gateway(
        tmp_path,
        [{"endpoint_id": "slow", "url": slow.url, "kind": "openai"}],
        limits={**FAST_LIMITS, "quic_max_pending_per_stream": 4},
    ).start()

    async def scenario() -> list[AckStatus]:
        async with QuicClient("127.0.0.1", g.quic_port, verify=False) as c:
            acks = [a async for a in c.stream([msg(i, agent="quic-bp") for i in range(40)])]
        busy = [a for a in acks if a.status is AckStatus.REJECTED]
        assert busy, "nothing was refused"
        assert {a.error_code for a in busy} == {"stream_backlog_full"}
        assert all(a.retry_after_s > 0 for a in busy)
        return [a.status for a in acks]

    try:
        statuses = asyncio.run(scenario())
        assert statuses.count(AckStatus.SUCCESS) >= 4
    finally:
        g.stop()
        slow.stop()


def test_unauthenticated_streams_are_closed(sim: Sim, tmp_path: Path) -> None:
    key = "quic-admin-key-0123456789"
    g = make_gateway(
        tmp_path,
        [{"endpoint_id": "sim", "url": sim.url, "kind": "openai"}],
        env={"AIMESH_ADMIN_KEY": key},
    ).start()

    async def scenario() -> None:
        async with QuicClient("127.0.0.1", g.quic_port, cafile=str(g.certificate)) as c:
            with pytest.raises(AuthenticationError):
                await c.send(msg(1))
        wrong = QuicClient("127.0.0.1", g.quic_port, api_key="nope", verify=False)
        async with wrong:
            with pytest.raises(AuthenticationError):
                await wrong.send(msg(2))
        ok = QuicClient("127.0.0.1", g.quic_port, api_key=key, cafile=str(g.certificate))
        async with ok:
            assert (await ok.send(msg(3))).status is AckStatus.SUCCESS

    try:
        asyncio.run(scenario())
        assert key not in g.log_text()
    finally:
        g.stop()


def test_tenant_keys_scope_quic_messages_and_revocation_ends_them(sim: Sim, tmp_path: Path) -> None:
    """A tenant key in the hello puts the connection's messages in that
    tenant; revoking the key refuses the next frame on an open stream."""
    admin = "quic-admin-key-tenants-0123456789"
    g = make_gateway(
        tmp_path,
        [{"endpoint_id": "sim", "url": sim.url, "kind": "openai"}],
        env={"AIMESH_ADMIN_KEY": admin},
    ).start()
    h = {"Authorization": f"Bearer {admin}"}
    try:
        with g.client() as c:
            key = c.post("/tenants", json={"tenant_id": "quic-t", "tier": "pro"}, headers=h).json()[
                "api_key"
            ]

        async def scenario() -> None:
            async with QuicClient(
                "127.0.0.1", g.quic_port, api_key=key, cafile=str(g.certificate)
            ) as qc:
                m = msg(1)
                assert (await qc.send(m, async_mode=True)).status is AckStatus.RECEIVED
                with g.client() as c:
                    # The message is the tenant's: found with its key, not
                    # in the default tenant.
                    tenant_h = {"Authorization": f"Bearer {key}"}
                    assert c.get(f"/messages/{m.message_id}", headers=tenant_h).status_code == 200
                    assert c.get(f"/messages/{m.message_id}", headers=h).status_code == 404
                    r = c.post("/tenants/quic-t/rotate-key", headers=tenant_h)
                    assert r.status_code == 201
                with pytest.raises(AuthenticationError):
                    await qc.send(msg(2))

        asyncio.run(scenario())
        assert key not in g.log_text()
    finally:
        g.stop()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_client_reconnects_after_server_restart(sim: Sim, tmp_path: Path, how: str) -> None:
    g = make_gateway(tmp_path, [{"endpoint_id": "sim", "url": sim.url, "kind": "openai"}]).start()

    async def scenario() -> None:
        async with client(g) as c:
            assert (await c.send(msg(1))).status is AckStatus.SUCCESS
            if how == "sigkill":
                g.kill()
            else:
                g.stop()
            g.start()
            await asyncio.sleep(1.2)  # the old connection has gone quiet
            assert (await c.send(msg(2))).status is AckStatus.SUCCESS
            assert c.reconnects == 1

    try:
        asyncio.run(scenario())
    finally:
        g.stop()


async def test_unreachable_server_is_a_transport_error() -> None:
    from tests.gateway import free_udp_port

    c = QuicClient("127.0.0.1", free_udp_port(), verify=False, timeout=1.0)
    with pytest.raises(TransportError) as err:
        await c.send(msg(1))
    assert err.value.code == "connect_failed"


# -- the SDK ----------------------------------------------------------------------


def test_sync_sdk_over_quic(gw: Gateway) -> None:
    with AiMeshClient(
        gw.url, transport="quic", quic_addr=f"127.0.0.1:{gw.quic_port}", cafile=str(gw.certificate)
    ) as c:
        ack = c.send_message(msg(1, agent="sdk-quic"))
        assert ack.status is AckStatus.SUCCESS
        acks = c.send_batch([msg(i, agent="sdk-quic") for i in range(10)], mode="async")
        assert {a.status for a in acks} == {AckStatus.RECEIVED}
        assert c.health()["status"] == "ok"  # other calls stay on HTTP


async def test_async_sdk_over_quic_maps_errors(sim: Sim, tmp_path: Path) -> None:
    g = make_gateway(
        tmp_path,
        [{"endpoint_id": "sim", "url": sim.url, "kind": "openai"}],
        limits={"rate_limit_rps": 1.0},
    ).start()
    try:
        async with AsyncAiMeshClient(
            g.url, transport="quic", quic_addr=f"127.0.0.1:{g.quic_port}", verify=False
        ) as c:
            assert (await c.send_message(msg(1, agent="limited"))).status is AckStatus.SUCCESS
            with pytest.raises(RateLimitError) as err:
                await c.send_message(msg(2, agent="limited"))
            assert err.value.retry_after and err.value.retry_after > 0
    finally:
        g.stop()


async def test_protobuf_cannot_bypass_field_limits(gw: Gateway) -> None:
    """The JSON form caps metadata entries and dependencies; the protobuf
    form (single frames and batches) is held to the same caps."""
    big_meta = _native.encode_message(
        agent_id="quic-agent",
        payload=b"x",
        metadata={f"k{i}": "v" for i in range(65)},
    )
    many_deps = _native.encode_message(
        agent_id="quic-agent", payload=b"y", dependencies=[f"d{i}" for i in range(257)]
    )
    fine = msg(1).to_protobuf()
    async with raw_connection(gw.quic_port) as conn:
        sid = conn.open()
        conn.write(sid, encode_hello() + framed(big_meta, fine), end=True)
        r = await conn.result(sid)
        first, second = acks_of(bytes(r.data))
        assert first.status is AckStatus.REJECTED and first.error_code == "invalid_metadata"
        assert second.status is AckStatus.SUCCESS

        sid = conn.open()
        batch = _native.encode_batch([many_deps, msg(2).to_protobuf()])
        conn.write(sid, encode_hello(batches=True) + _native.frame(batch), end=True)
        r = await conn.result(sid)
        (answer,) = _native.split_frames(bytes(r.data))
        acks = pb.acks_from_protobuf(bytes(answer))
        assert [a.error_code for a in acks] == ["invalid_dependencies", ""]
        assert acks[1].status is AckStatus.SUCCESS


def test_idle_connections_are_closed(sim: Sim, tmp_path: Path) -> None:
    g = make_gateway(
        tmp_path,
        [{"endpoint_id": "sim", "url": sim.url, "kind": "openai"}],
        limits={"quic_idle_timeout_s": 1.0},
    ).start()

    async def scenario() -> None:
        async with raw_connection(g.quic_port) as conn:
            for _ in range(60):  # bounded: 3 s at most
                if conn.closed_code is not None:
                    break
                await asyncio.sleep(0.05)
            assert conn.closed_code is not None, "the idle connection is still open"

    try:
        asyncio.run(scenario())
    finally:
        g.stop()
