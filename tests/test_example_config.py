"""The main job: `aimesh serve` with examples/aimesh.toml starts its bundled
simulators and routes messages to them (what `make run` runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.gateway import free_port, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_serves_offline(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")}
    env.update(
        AIMESH_BIND_ADDR=f"127.0.0.1:{port}",
        AIMESH_DATA_DIR=str(tmp_path / "data"),
        AIMESH_LOG_LEVEL="warning",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aimesh.cli",
            "serve",
            "--config",
            str(ROOT / "examples/aimesh.toml"),
        ],
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", proc, timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            ack = c.post(
                "/messages", json={"agent_id": "demo-agent", "payload_text": "Hello"}
            ).json()
            assert ack["status"] == "success" and ack["endpoint_id"].startswith("sim-")
            big = c.post(
                "/messages",
                json={
                    "agent_id": "demo-agent",
                    "payload_text": "Hi",
                    "metadata": {"model": "gpt-4o"},
                },
            ).json()
            assert big["endpoint_id"] == "sim-large"
            budget = c.get("/budgets/demo-agent").json()
            assert budget["initial_tokens"] == 100000
            assert budget["remaining_tokens"] == 100000 - ack["tokens_used"] - big["tokens_used"]
    finally:
        stop(proc, signal.SIGTERM)
    assert proc.returncode == 0
    for sim_port in (8101, 8102, 8103):  # the simulators went away with the server
        try:
            httpx.get(f"http://127.0.0.1:{sim_port}/health", timeout=1)
            raise AssertionError(f"simulator on {sim_port} still running")
        except httpx.TransportError:
            pass
