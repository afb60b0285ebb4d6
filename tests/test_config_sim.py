"""Configuration loading and the upstream simulator's own behaviour."""

from __future__ import annotations

import httpx
import orjson
import pytest

from aimesh.config import AiMeshConfig, parse_addr
from aimesh.errors import ValidationError


def test_toml_then_environment(tmp_path):
    cfg_file = tmp_path / "a.toml"
    cfg_file.write_text(
        """
[server]
bind_addr = "127.0.0.1:9100"
data_dir = "state"
[limits]
rate_limit_rps = 5
[routing]
normalize = false
[[endpoints]]
endpoint_id = "http://127.0.0.1:8101"
group = "g"
[[budgets]]
agent_id = "a"
tokens = 10
"""
    )
    cfg = AiMeshConfig.load(cfg_file, env={"AIMESH_RATE_LIMIT_RPS": "7", "AIMESH_DEDUP_TTL": "9"})
    assert cfg.bind_addr == "127.0.0.1:9100"
    assert cfg.data_dir == str(tmp_path / "state")
    assert cfg.rate_limit_rps == 7 and cfg.dedup_ttl_s == 9 and cfg.normalize is False
    assert cfg.endpoints[0].url == "http://127.0.0.1:8101"
    assert cfg.budgets[0].tokens == 10
    assert AiMeshConfig.load(env={}).bind_addr == "0.0.0.0:9000"


def test_header_timeout_from_file_and_environment(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text("[server]\nheader_timeout_s = 2.5\n")
    assert AiMeshConfig.load(env={}).header_timeout_s == 10.0
    assert AiMeshConfig.load(f, env={}).header_timeout_s == 2.5
    env = {"AIMESH_HEADER_TIMEOUT_S": "1.5"}
    assert AiMeshConfig.load(f, env=env).header_timeout_s == 1.5


@pytest.mark.parametrize(
    "text",
    [
        "[limits]\nrate_limit_rps = 'fast'",
        "[limits]\nunknown = 1",
        "[[endpoints]]\nendpoint_id = 'x'\nkind = 'grpc'",
        "not toml at all [",
        "[limits]\nrate_limit_rps = 0",
        "[[budgets]]\nagent = 'a'",
        "[server]\nheader_timeout_s = 0",
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValidationError):
        AiMeshConfig.load(f, env={})


def test_missing_config_and_bad_env():
    with pytest.raises(ValidationError) as e:
        AiMeshConfig.load("/nonexistent.toml", env={})
    assert e.value.code == "config_not_found"
    with pytest.raises(ValidationError):
        AiMeshConfig.load(env={"AIMESH_QUEUE_CAPACITY": "many"})
    assert parse_addr("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValidationError):
        parse_addr("nohost")


def test_simulator_chat_stream_failures_and_control(sims):
    sim = sims("--latency-ms", "1", "--completion-tokens", "5", "--model", "tiny")
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    with httpx.Client(base_url=sim.url) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        data = r.json()
        assert data["object"] == "chat.completion"
        assert data["usage"]["completion_tokens"] == 5
        assert c.post("/v1/chat/completions", json={"model": "m"}).status_code == 400
        events = []
        with c.stream(
            "POST",
            "/v1/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        ) as s:
            assert s.headers["content-type"] == "text/event-stream"
            for line in s.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
        assert events[-1] == "[DONE]"
        chunks = [orjson.loads(e) for e in events[:-1]]
        text = "".join(
            ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]
        )
        assert "hello there" in text
        assert chunks[-1]["usage"]["total_tokens"] == data["usage"]["total_tokens"]
        sim.configure(failure_rate=1.0, failure_status=503)
        assert c.post("/v1/chat/completions", json=body).status_code == 503
        assert c.post("/_sim/config", json={"failure_rate": 2}).status_code == 400
        assert c.post("/_sim/config", json={"nope": 1}).status_code == 400
        stats = sim.stats()
        assert stats["requests"] == 4 and stats["by_status"]["503"] == 1
        sim.reset()
        assert sim.stats()["requests"] == 0
        assert c.get("/v1/models").json()["data"][0]["id"] == "tiny"
