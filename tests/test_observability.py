"""Structured logs and trace propagation of a real gateway process."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, ClassVar

import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.conftest import openai_endpoint

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def test_json_log_line_per_message_with_trace_id(sims, gateways):
    sim = sims()
    gw = gateways([openai_endpoint(sim, "sim")], env={"AIMESH_LOG_LEVEL": "info"})
    secret_text = "do-not-log-this-payload"
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        r = http.post(
            "/messages",
            json={"agent_id": "logged", "payload_text": secret_text},
            headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
        )
        assert r.status_code == 200
        ack = r.json()
        assert ack["trace_id"] == TRACE_ID
        again = http.post("/messages", json={"agent_id": "logged", "payload_text": secret_text})
        assert again.json()["status"] == "duplicate"
    gw.stop()
    lines = [line for line in gw.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    mine = [
        r
        for r in records
        if r["logger"] == "aimesh.messages" and r.get("message_id") == ack["original_message_id"]
    ]
    assert len(mine) == 1
    line = mine[0]
    assert line["agent_id"] == "logged" and line["endpoint_id"] == "sim"
    assert line["status"] == "success" and line["tokens"] == ack["tokens_used"]
    assert line["trace_id"] == TRACE_ID and line["latency_ms"] > 0
    dup = [r for r in records if r.get("duplicate_of") == ack["original_message_id"]]
    assert len(dup) == 1 and dup[0]["status"] == "duplicate"
    assert all("color_message" not in r for r in records)
    assert secret_text not in gw.log_text()
    # The upstream saw the same trace.
    assert TRACE_ID in httpx.get(f"{sim.url}/_sim/stats").json()["trace_ids"]


class _Collector(http.server.BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP trace receiver: decodes and keeps every span."""

    spans: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                _Collector.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        pass


def test_pipeline_stages_are_spans_of_the_agents_trace(sims, gateways):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sim = sims()
        gw = gateways(
            [openai_endpoint(sim, "sim")],
            env={
                "AIMESH_OTEL_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
            budgets=[{"agent_id": "traced", "tokens": 10_000}],
        )
        r = httpx.post(
            f"{gw.url}/messages",
            json={"agent_id": "traced", "payload_text": "trace me"},
            headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"},
            timeout=10,
        )
        assert r.status_code == 200
        want = {
            "aimesh.admit",
            "aimesh.budget.reserve",
            "aimesh.queue",
            "aimesh.route",
            "aimesh.deliver",
            "aimesh.budget.settle",
        }
        names: set[str] = set()
        for _ in range(100):
            names = {s.name for s in _Collector.spans if s.trace_id.hex() == TRACE_ID}
            if want <= names:
                break
            time.sleep(0.05)
        assert want <= names
        deliver = next(s for s in _Collector.spans if s.name == "aimesh.deliver")
        attrs = {a.key: a.value.string_value or a.value.int_value for a in deliver.attributes}
        assert attrs["aimesh.endpoint"] == "sim" and attrs["aimesh.status"] == "success"
    finally:
        server.shutdown()


def test_tracing_is_off_and_not_imported_without_an_endpoint():
    code = (
        "import asyncio, sys\n"
        "from aimesh import AiMesh, AiMeshConfig, AIMessage, telemetry\n"
        "assert telemetry.configure() is False and not telemetry.enabled\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules)\n"
        "print('off')\n"
    )
    env = {k: v for k, v in os.environ.items() if "OTEL" not in k}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "off"
