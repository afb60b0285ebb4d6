"""``application/x-protobuf`` bodies: the same messages as the JSON API.

Single messages are decoded by the native codec (payload without a copy
until the model takes it); batches and acknowledgments use the generated
``aimesh_pb2`` module.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from aimesh.errors import FrameError
from aimesh.models import Acknowledgment, AckStatus, AIMessage
from aimesh.proto import aimesh_pb2 as pb2

_ACK_TO_PB = {
    AckStatus.RECEIVED: pb2.ACK_STATUS_RECEIVED,
    AckStatus.SUCCESS: pb2.ACK_STATUS_PROCESSED,
    AckStatus.FAILED: pb2.ACK_STATUS_FAILED,
    AckStatus.DUPLICATE: pb2.ACK_STATUS_DUPLICATE,
    AckStatus.REJECTED: pb2.ACK_STATUS_REJECTED,
}
_PB_TO_ACK = {v: k for k, v in _ACK_TO_PB.items()}


def message_from_protobuf(body: bytes) -> AIMessage:
    return AIMessage.from_protobuf(body)


def message_to_protobuf(msg: AIMessage) -> bytes:
    return msg.to_protobuf()


def batch_to_protobuf(messages: list[AIMessage]) -> bytes:
    batch = pb2.MessageBatch()
    for m in messages:
        batch.messages.add().ParseFromString(message_to_protobuf(m))
    return bytes(batch.SerializeToString(deterministic=True))


def _ack_pb(ack: Acknowledgment) -> pb2.Acknowledgment:
    return pb2.Acknowledgment(
        original_message_id=ack.original_message_id,
        status=_ACK_TO_PB[ack.status],
        tokens_used=ack.tokens_used,
        processing_latency_ms=ack.processing_latency_ms,
        endpoint_id=ack.endpoint_id,
        error=ack.error,
        result=ack.result,
        error_code=ack.error_code,
        retry_after_s=ack.retry_after_s,
        trace_id=ack.trace_id,
    )


def ack_to_protobuf(ack: Acknowledgment) -> bytes:
    return bytes(_ack_pb(ack).SerializeToString(deterministic=True))


def acks_to_protobuf(acks: list[Acknowledgment]) -> bytes:
    batch = pb2.AcknowledgmentBatch(acknowledgments=[_ack_pb(a) for a in acks])
    return bytes(batch.SerializeToString(deterministic=True))


def _ack_from_pb(p: pb2.Acknowledgment) -> Acknowledgment:
    return Acknowledgment(
        original_message_id=p.original_message_id,
        status=_PB_TO_ACK.get(p.status, AckStatus.FAILED),
        tokens_used=p.tokens_used,
        processing_latency_ms=p.processing_latency_ms,
        endpoint_id=p.endpoint_id,
        error=p.error,
        result=p.result,
        error_code=p.error_code,
        retry_after_s=p.retry_after_s,
        trace_id=p.trace_id,
    )


def ack_from_protobuf(body: bytes) -> Acknowledgment:
    p = pb2.Acknowledgment()
    try:
        p.ParseFromString(body)
    except DecodeError as e:
        raise FrameError("invalid_protobuf", f"body is not an Acknowledgment: {e}") from None
    return _ack_from_pb(p)


def acks_from_protobuf(body: bytes) -> list[Acknowledgment]:
    p = pb2.AcknowledgmentBatch()
    try:
        p.ParseFromString(body)
    except DecodeError as e:
        raise FrameError("invalid_protobuf", f"body is not an AcknowledgmentBatch: {e}") from None
    return [_ack_from_pb(a) for a in p.acknowledgments]
