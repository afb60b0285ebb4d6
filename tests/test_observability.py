"""Structured logs and trace propagation of a real gateway process."""

from __future__ import annotations

import json

import httpx

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
