"""Shared fixtures: real simulator and gateway processes on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import Gateway, Sim, make_gateway, start_sim
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server (Debian's) on a free loopback port."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def sims() -> Iterator[Callable[..., Sim]]:
    """Start simulators (``sims("--latency-ms", "5")``); all stopped after the test."""
    started: list[Sim] = []

    def factory(*args: str) -> Sim:
        sim = start_sim(*args)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start ``aimesh serve`` processes with a generated config; all stopped
    after the test (their logs are printed on failure)."""
    started: list[Gateway] = []

    def factory(endpoints: list[dict[str, Any]], **kw: Any) -> Gateway:
        sub = tmp_path / f"gw{len(started)}"
        sub.mkdir()
        gw = make_gateway(sub, endpoints, **kw).start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        gw.stop()
    for gw in started:
        text = gw.log_text()
        if text.strip():
            print(f"--- gateway log ({gw.url}) ---\n{text[-4000:]}")


def openai_endpoint(sim: Sim, endpoint_id: str, **kw: Any) -> dict[str, Any]:
    ep: dict[str, Any] = {"endpoint_id": endpoint_id, "url": sim.url, "kind": "openai"}
    ep.update(kw)
    return ep
