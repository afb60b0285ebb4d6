"""The Python SDK (sync and async), the README examples and the CLI against
a real gateway process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aimesh import (
    AiMeshClient,
    AsyncAiMeshClient,
    BudgetExceededError,
    EndpointMetrics,
    Message,
    NotFoundError,
    RateLimitError,
    ValidationError,
)
from tests.conftest import openai_endpoint
from tests.gateway import make_gateway

ROOT = Path(__file__).resolve().parent.parent


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run_readme_blocks(marker: str, cwd: Path | None = None) -> list[str]:
    """Run every README Python block containing ``marker`` as written;
    answer their outputs (each must exit 0)."""
    blocks = [b for b in readme_blocks() if marker in b]
    assert blocks, f"README has no example with {marker!r}"
    outputs = []
    for block in blocks:
        out = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, cwd=cwd
        )
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout)
    return outputs


def test_readme_sdk_example_runs_as_written(sims, tmp_path):
    """The README's SDK example hard-codes localhost:9000: run a gateway there."""
    sim = sims()
    gw = make_gateway(tmp_path, [openai_endpoint(sim, "sim")])
    gw.port = 9000
    gw.env["AIMESH_BIND_ADDR"] = "127.0.0.1:9000"
    gw.start()
    try:
        for stdout in run_readme_blocks("AiMeshClient("):
            assert "Processed in" in stdout
    finally:
        gw.stop()


def test_readme_quic_example_runs_as_written(sims, tmp_path):
    """The README's QUIC example uses 127.0.0.1:9001 and the certificate in
    ./.aimesh-data: run a gateway so, and the example from its directory."""
    sim = sims()
    gw = make_gateway(tmp_path, [openai_endpoint(sim, "sim")])
    gw.data_dir = tmp_path / ".aimesh-data"
    gw.env["AIMESH_DATA_DIR"] = str(gw.data_dir)
    gw.env["AIMESH_QUIC_ADDR"] = "127.0.0.1:9001"
    gw.start()
    try:
        for stdout in run_readme_blocks("QuicClient(", cwd=tmp_path):
            assert stdout.strip() == "['success', 'success', 'success']"
    finally:
        gw.stop()


def test_readme_openai_example_runs_as_written(sims, tmp_path):
    """The README's OpenAI-client example: localhost:9000, model gpt-4o-mini."""
    sim = sims()
    gw = make_gateway(tmp_path, [openai_endpoint(sim, "sim", group="gpt-4o-mini")])
    gw.port = 9000
    gw.env["AIMESH_BIND_ADDR"] = "127.0.0.1:9000"
    gw.start()
    try:
        for stdout in run_readme_blocks("from openai import OpenAI"):
            assert "Hello, AI!" in stdout  # the simulator echoes the prompt
    finally:
        gw.stop()


def test_readme_embedded_example_runs_as_written():
    for stdout in run_readme_blocks("AiMesh(AiMeshConfig())"):
        assert "gpt-4" in stdout


@pytest.fixture
def gw(sims, gateways):
    return gateways(
        [openai_endpoint(sims(), "sim", group="gpt-4o")],
        limits={"rate_limit_rps": 3, "rate_limit_burst": 3},
    )


def test_sync_client_methods_and_errors(gw, sims):
    with AiMeshClient(gw.url) as client:
        assert client.health()["status"] == "ok"
        ack = client.send_message(
            Message(agent_id="sdk", payload=b"hi", metadata={"model": "gpt-4o"})
        )
        assert ack.status.value == "success"
        assert ack.result_text
        assert client.route(Message(agent_id="sdk", payload=b"x"))["target_endpoint"] == "sim"
        extra = sims()
        client.register_endpoint(EndpointMetrics(endpoint_id="extra", url=extra.url, group="g2"))
        assert {e["endpoint_id"] for e in client.list_endpoints()} == {"sim", "extra"}
        client.remove_endpoint("extra")
        info = client.set_budget("sdk-budget", 50)
        assert info.remaining_tokens == 50
        assert client.get_budget("sdk-budget").initial_tokens == 50
        with pytest.raises(BudgetExceededError) as e:
            client.send_message(
                Message(agent_id="sdk-budget", payload=b"x", estimated_cost_tokens=60)
            )
        assert e.value.code == "budget_exceeded"
        assert client.reset_budget("sdk-budget").remaining_tokens == 50
        with pytest.raises(ValidationError) as v:
            client.send_message(Message(agent_id="Not Valid", payload=b"x"))
        assert v.value.code == "invalid_agent_id"
        with pytest.raises(NotFoundError):
            client.get_budget("nobody")
        with pytest.raises(RateLimitError) as rl:
            for i in range(10):
                client.send_message(Message(agent_id="burst", payload=f"{i}".encode()))
        assert rl.value.retry_after is not None and rl.value.retry_after >= 1
        assert client.get_stats()["messages"]["success"] >= 1
        assert "aimesh_messages_total" in client.get_metrics()
        mid = client.send_message(Message(agent_id="later", payload=b"q"), mode="async")
        assert mid.status.value == "received"
        acks = client.send_batch(
            [Message(agent_id="batch", payload=b"1"), Message(agent_id="batch", payload=b"2")]
        )
        assert [a.status.value for a in acks] == ["success", "success"]


async def test_async_client(gw):
    async with AsyncAiMeshClient(gw.url) as client:
        ack = await client.send_message(Message(agent_id="async-sdk", payload=b"hello"))
        assert ack.status.value == "success"
        assert (await client.health())["status"] == "ok"
        with pytest.raises(ValidationError):
            await client.send_message(Message(agent_id="a", payload=b"x", priority=500))


def run_cli(gw_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aimesh.cli", *args, "--url", gw_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_commands(gw, sims):
    out = run_cli(gw.url, "send", "--agent", "cli", "Hello from the CLI")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "success"
    out = run_cli(gw.url, "route", "--agent", "cli", "where to?")
    assert json.loads(out.stdout)["target_endpoint"] == "sim"
    extra = sims()
    out = run_cli(
        gw.url, "endpoints", "add", "cli-ep", "--endpoint-url", extra.url, "--cost", "0.5"
    )
    assert out.returncode == 0, out.stderr
    out = run_cli(gw.url, "endpoints", "list")
    assert {e["endpoint_id"] for e in json.loads(out.stdout)} == {"sim", "cli-ep"}
    assert run_cli(gw.url, "endpoints", "rm", "cli-ep").returncode == 0
    out = run_cli(gw.url, "budgets", "set", "cli-agent", "1234")
    assert json.loads(out.stdout)["remaining_tokens"] == 1234
    out = run_cli(gw.url, "budgets", "get", "cli-agent")
    assert json.loads(out.stdout)["initial_tokens"] == 1234
    assert run_cli(gw.url, "budgets", "reset", "cli-agent").returncode == 0
    out = run_cli(gw.url, "budgets", "get", "nobody")
    assert out.returncode == 1
    assert "budget_not_found" in out.stderr
    out = run_cli(gw.url, "stats")
    assert json.loads(out.stdout)["messages"]["success"] >= 1
    out = subprocess.run(
        [sys.executable, "-m", "aimesh.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("serve", "sim", "send", "route", "endpoints", "budgets", "stats"):
        assert command in out.stdout


def test_cli_reports_an_unreachable_server():
    out = run_cli("http://127.0.0.1:9", "stats")
    assert out.returncode == 1
    assert "cannot reach" in out.stderr


@pytest.fixture
def fast_gw(sims, gateways):
    return gateways(
        [openai_endpoint(sims(), "sim", group="gpt-4o")],
        limits={"rate_limit_rps": 100_000},
    )


def test_cli_send_file_shows_a_summary(fast_gw, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps(f"plain prompt {i}") for i in range(8)]
    lines += [json.dumps({"prompt": f"prompt object {i}"}) for i in range(8)]
    lines += [json.dumps({"agent_id": "own-agent", "payload_text": "full message"})]
    lines += ["{not json", "", json.dumps({"agent_id": "Bad Agent", "payload_text": "x"})]
    prompts.write_text("\n".join(lines) + "\n")
    results = tmp_path / "acks.jsonl"
    out = run_cli(
        fast_gw.url, "send", "--file", str(prompts), "--model", "gpt-4o", "--out", str(results)
    )
    # One line is not JSON, one message is refused: the exit status says so.
    assert out.returncode == 1, out.stderr
    assert "prompts.jsonl:18" in out.stderr
    table = out.stdout
    assert re.search(r"messages\s*│\s*19", table), table
    assert re.search(r"success\s*│\s*17", table), table
    assert re.search(r"invalid_line\s*│\s*1", table), table
    assert re.search(r"rejected:invalid_agent_id\s*│\s*1", table), table
    assert "endpoint sim" in table and "throughput" in table
    acks = [json.loads(line) for line in results.read_text().splitlines()]
    assert [a["status"] for a in acks].count("success") == 17
    assert [a["status"] for a in acks].count("rejected") == 1


def test_cli_bench(fast_gw, sims):
    out = run_cli(fast_gw.url, "bench", "--messages", "150", "--concurrency", "8")
    assert out.returncode == 0, out.stderr
    assert re.search(r"messages\s*│\s*150", out.stdout), out.stdout
    assert re.search(r"success\s*│\s*150", out.stdout), out.stdout
    assert "latency P99" in out.stdout and "msgs/s" in out.stdout
