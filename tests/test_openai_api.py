"""The OpenAI-compatible front door, driven by the official ``openai``
client (sync, async, streaming) against a real gateway and real upstream
simulators."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import openai_endpoint
from tests.gateway import Gateway, Sim, make_gateway, start_sim

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Sim, Sim]]:
    cheap, pricey = start_sim("--stream-chunks", "6"), start_sim("--stream-chunks", "6")
    yield cheap, pricey
    cheap.stop()
    pricey.stop()


@pytest.fixture(scope="module")
def gw(pair: tuple[Sim, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cheap, pricey = pair
    endpoints = [
        openai_endpoint(cheap, "cheap", group="gpt-4o", cost_per_1k_tokens=1.0),
        openai_endpoint(pricey, "pricey", group="gpt-4o", cost_per_1k_tokens=10.0),
    ]
    budgets = [
        {"agent_id": "tight", "tokens": 100},
        {"agent_id": "metered", "tokens": 100_000},
        {"agent_id": "leaver", "tokens": 100_000},
    ]
    g = make_gateway(tmp_path_factory.mktemp("openai"), endpoints, budgets=budgets).start()
    yield g
    g.stop()


def client(g: Gateway, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key="agent-key", max_retries=0, **kw)  # type: ignore[arg-type]


def ask(text: str | None = None) -> list[dict[str, str]]:
    """A prompt no other test sends (no dedup hits across tests)."""
    return [{"role": "user", "content": text or f"hello {uuid.uuid4()}"}]


def budget(g: Gateway, agent: str) -> dict[str, int]:
    body = httpx.get(f"{g.url}/budgets/{agent}", timeout=10).json()
    return {k: body[k] for k in ("initial_tokens", "remaining_tokens", "reserved_tokens")}


def test_models_and_a_completion_routed_to_the_cheapest(gw: Gateway) -> None:
    c = client(gw)
    assert [m.id for m in c.models.list()] == ["gpt-4o"]
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask())
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert raw.headers["x-aimesh-endpoint"] == "cheap"
    assert raw.headers["x-aimesh-tokens"] == str(completion.usage.total_tokens)


async def test_async_client_and_async_streaming(gw: Gateway) -> None:
    c = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="agent-key", max_retries=0)
    completion = await c.chat.completions.create(model="gpt-4o", messages=ask())
    assert completion.choices[0].message.content
    stream = await c.chat.completions.create(model="gpt-4o", messages=ask(), stream=True)
    parts = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
    assert len(parts) > 3 and "".join(parts)
    await c.close()


def test_streaming_relays_events_and_usage_on_request(gw: Gateway, pair: tuple[Sim, Sim]) -> None:
    c = client(gw)
    chunks = list(c.chat.completions.create(model="gpt-4o", messages=ask(), stream=True))
    # Six content pieces (the simulator's --stream-chunks) plus role and stop.
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) == 6
    # AiMesh asks the upstream for usage to count tokens, but a client that
    # did not ask gets no usage-only event.
    assert all(ch.choices for ch in chunks)

    chunks = list(
        c.chat.completions.create(
            model="gpt-4o", messages=ask(), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_budget_applies_and_settles_with_real_usage(gw: Gateway) -> None:
    c = client(gw, default_headers={"X-AiMesh-Agent": "tight"})
    # The reservation (prompt + default 256 completion tokens) does not fit.
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="gpt-4o", messages=ask())
    assert err.value.status_code == 402
    assert err.value.body["code"] == "budget_exceeded"  # type: ignore[index]

    metered = client(gw, default_headers={"X-AiMesh-Agent": "metered"})
    completion = metered.chat.completions.create(model="gpt-4o", messages=ask(), max_tokens=64)
    assert completion.usage is not None
    after = budget(gw, "metered")
    assert after["reserved_tokens"] == 0
    assert after["initial_tokens"] - after["remaining_tokens"] == completion.usage.total_tokens


def test_dedup_answers_a_repeat_without_an_upstream_call(
    gw: Gateway, pair: tuple[Sim, Sim]
) -> None:
    c = client(gw)
    messages = ask()
    before = sum(httpx.get(f"{s.url}/_sim/stats").json()["requests"] for s in pair)
    first = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    again = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    after = sum(httpx.get(f"{s.url}/_sim/stats").json()["requests"] for s in pair)
    assert after - before == 1
    assert again.headers["x-aimesh-status"] == "duplicate"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_traceparent_reaches_the_upstream_and_the_answer(
    gw: Gateway, pair: tuple[Sim, Sim]
) -> None:
    c = client(gw, default_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    raw = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=ask())
    assert raw.headers["x-aimesh-trace-id"] == TRACE_ID
    seen = httpx.get(f"{pair[0].url}/_sim/stats").json()["trace_ids"]
    assert seen.get(TRACE_ID) == 1


def test_bad_requests_are_openai_errors(gw: Gateway) -> None:
    c = client(gw)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="no-such-model", messages=ask())
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="gpt-4o", messages=[])
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=b"{not json", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_client_leaving_mid_stream_settles_the_budget(gw: Gateway, pair: tuple[Sim, Sim]) -> None:
    slow = pair[0]
    httpx.post(f"{slow.url}/_sim/config", json={"stream_chunks": 40, "chunk_delay_ms": 100})
    try:
        body = {"model": "gpt-4o", "messages": ask(), "stream": True, "max_tokens": 500}
        headers = {"x-aimesh-agent": "leaver"}
        with (
            httpx.Client(timeout=10) as http,
            http.stream("POST", f"{gw.url}/v1/chat/completions", json=body, headers=headers) as r,
        ):
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            assert budget(gw, "leaver")["reserved_tokens"] > 0  # still streaming
        # The client is gone: the next upstream event stops the delivery and
        # the budget settles (bounded wait).
        for _ in range(100):
            state = budget(gw, "leaver")
            if state["reserved_tokens"] == 0:
                break
            time.sleep(0.05)
        assert state["reserved_tokens"] == 0
        assert 0 < state["initial_tokens"] - state["remaining_tokens"] < 500
    finally:
        httpx.post(f"{slow.url}/_sim/config", json={"stream_chunks": 6, "chunk_delay_ms": 5})


def test_stream_falls_back_before_the_first_byte(tmp_path: Path) -> None:
    broken = start_sim("--failure-rate", "1.0")
    healthy = start_sim()
    g = make_gateway(
        tmp_path,
        [
            openai_endpoint(broken, "broken", group="m", cost_per_1k_tokens=0.1),
            openai_endpoint(healthy, "healthy", group="m", cost_per_1k_tokens=5.0),
        ],
    ).start()
    try:
        chunks = list(client(g).chat.completions.create(model="m", messages=ask(), stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert httpx.get(f"{broken.url}/_sim/stats").json()["requests"] >= 1
        assert httpx.get(f"{healthy.url}/_sim/stats").json()["requests"] == 1
    finally:
        g.stop()
        broken.stop()
        healthy.stop()


def test_rate_limit_and_keys(tmp_path: Path) -> None:
    sim = start_sim()
    key = "openai-front-door-key-42"
    g = make_gateway(
        tmp_path,
        [openai_endpoint(sim, "s", group="m")],
        limits={"rate_limit_rps": 1.0},
        env={"AIMESH_ADMIN_KEY": key},
    ).start()
    try:
        with pytest.raises(openai.AuthenticationError):
            client(g).chat.completions.create(model="m", messages=ask())
        good = openai.OpenAI(base_url=f"{g.url}/v1", api_key=key, max_retries=0)
        assert good.chat.completions.create(model="m", messages=ask()).choices
        with pytest.raises(openai.RateLimitError) as err:
            good.chat.completions.create(model="m", messages=ask())
        assert int(err.value.response.headers["retry-after"]) >= 1
        assert key not in g.log_text()
    finally:
        g.stop()
        sim.stop()


def test_a_stream_broken_after_its_first_event_does_not_fall_back(tmp_path: Path) -> None:
    breaking = start_sim("--stream-chunks", "6")
    spare = start_sim()
    httpx.post(f"{breaking.url}/_sim/config", json={"stream_break_after": 2})
    g = make_gateway(
        tmp_path,
        [
            openai_endpoint(breaking, "breaking", group="m", cost_per_1k_tokens=0.1),
            openai_endpoint(spare, "spare", group="m", cost_per_1k_tokens=5.0),
        ],
        budgets=[{"agent_id": "streamer", "tokens": 10_000}],
    ).start()
    try:
        body = {"model": "m", "messages": ask(), "stream": True}
        with httpx.stream(
            "POST",
            f"{g.url}/v1/chat/completions",
            json=body,
            headers={"x-aimesh-agent": "streamer"},
            timeout=10,
        ) as r:
            assert r.status_code == 200
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        # role + two content events were relayed, then the error event.
        assert len(events) == 4, events
        assert '"error"' in events[-1]
        assert "[DONE]" not in "".join(events)
        # Too late to fall back: the spare endpoint was never called, and
        # the tokens already streamed were charged.
        assert httpx.get(f"{spare.url}/_sim/stats").json()["requests"] == 0
        state = budget(g, "streamer")
        assert state["reserved_tokens"] == 0
        assert state["initial_tokens"] > state["remaining_tokens"]
    finally:
        g.stop()
        breaking.stop()
        spare.stop()
