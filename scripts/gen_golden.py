"""Write the golden frames in proto/testdata/ (see its README.md).

Each ``<name>.bin`` holds one or more frames (4-byte big-endian length +
protobuf body, deterministic serialization); ``<name>.json`` describes every
field; ``manifest.json`` lists them. Every language's tests decode these and
must re-encode them byte for byte.
"""

from __future__ import annotations

import json
import pathlib
import struct
import sys
from typing import Any

from google.protobuf import json_format

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Load the generated module by path: no need to build the package for this.
sys.path.insert(0, str(ROOT / "python" / "aimesh" / "proto"))

import aimesh_pb2 as pb2  # noqa: E402

OUT = ROOT / "proto" / "testdata"


def frame(msg: Any) -> bytes:
    body = msg.SerializeToString(deterministic=True)
    return struct.pack(">I", len(body)) + body


def describe(msg: Any) -> dict[str, Any]:
    d = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=False
    )
    return d


def cases() -> list[tuple[str, str, str, list[Any]]]:
    full = pb2.AIMessage(
        agent_id="agent-7",
        message_id="0190f0f0-1234-7abc-8def-0123456789ab",
        payload=b"Hello, AI!\x00\xff",
        estimated_cost_tokens=120,
        budget_tokens=5000,
        deadline_ms=1_893_456_000_000,
        task_graph_id="graph-1",
        dependencies=["step-a", "step-b"],
        priority=0,
        dedup_context="conversation-42",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        metadata={"model": "gpt-4o", "team": "search", "a": "first"},
        timestamp=1_732_500_000_123_456_789,
    )
    minimal = pb2.AIMessage(agent_id="a", payload=b"hi")
    unicode = pb2.AIMessage(
        agent_id="agent_ü-free",
        payload="こんにちは, мир 👋".encode(),
        dedup_context="контекст",
        metadata={"emoji": "🚀", "model": "llama-3"},
    )
    zeros = pb2.AIMessage(agent_id="z", payload=b"\x00", priority=0, estimated_cost_tokens=0)
    batch = [
        pb2.AIMessage(agent_id=f"agent-{i}", payload=bytes([i]) * (i + 1), priority=i * 10)
        for i in range(5)
    ]
    ack = pb2.Acknowledgment(
        original_message_id="0190f0f0-1234-7abc-8def-0123456789ab",
        status=pb2.ACK_STATUS_PROCESSED,
        tokens_used=321,
        processing_latency_ms=12.5,
        endpoint_id="sim-fast",
        result=b'{"ok":true}',
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    )
    endpoint = pb2.EndpointMetrics(
        endpoint_id="gpt-4",
        capacity=1000,
        current_load=10,
        cost_per_1k_tokens=30.0,
        latency_p99_ms=500.0,
        error_rate=0.01,
        health_status=pb2.HEALTH_STATUS_HEALTHY,
        url="http://127.0.0.1:8101",
        kind="openai",
        group="gpt-4o",
        model="gpt-4o-2024-08-06",
        tags=["fast", "eu"],
        region="eu-west",
        api_key_env="OPENAI_API_KEY",
    )
    decision = pb2.RoutingDecision(
        message_id="0190f0f0-1234-7abc-8def-0123456789ab",
        target_endpoint="gpt-4",
        score_breakdown=pb2.RoutingScore(
            cost_score=0.1, load_score=0.2, latency_score=0.3, total_score=0.6
        ),
        fallback_endpoints=["claude", "llama"],
        reason="lowest score",
        group="gpt-4o",
    )
    message_batch = pb2.MessageBatch(messages=[minimal, unicode])
    return [
        ("message_minimal", "AIMessage", "only agent_id and payload", [minimal]),
        ("message_full", "AIMessage", "every field set; priority 0 present", [full]),
        ("message_unicode", "AIMessage", "non-ASCII strings and payload", [unicode]),
        ("message_zero_values", "AIMessage", "optional fields present with 0", [zeros]),
        ("message_stream", "AIMessage", "five frames back to back", batch),
        ("acknowledgment", "Acknowledgment", "a processed message", [ack]),
        ("endpoint_metrics", "EndpointMetrics", "every field set", [endpoint]),
        ("routing_decision", "RoutingDecision", "with breakdown and fallbacks", [decision]),
        ("message_batch", "MessageBatch", "a batch message of two", [message_batch]),
    ]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, kind, description, msgs in cases():
        data = b"".join(frame(m) for m in msgs)
        (OUT / f"{name}.bin").write_bytes(data)
        doc = {
            "type": kind,
            "description": description,
            "frames": [
                {"fields": describe(m), "body_hex": m.SerializeToString(deterministic=True).hex()}
                for m in msgs
            ],
            "frame_hex": data.hex(),
        }
        (OUT / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        manifest.append(
            {"file": f"{name}.bin", "type": kind, "frames": len(msgs), "description": description}
        )
    (OUT / "manifest.json").write_text(json.dumps({"golden": manifest}, indent=2) + "\n")
    print(f"wrote {len(manifest)} golden files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
