"""The process layout of the gateway benchmarks: ``aimesh serve`` pinned to
CPU 0, the upstream simulator (zero latency, 8 completion tokens) and the
load generator (this process) pinned to CPU 1, so "one core" means one."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway import Gateway, Sim, make_gateway, start_sim


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, {cpu})


@contextlib.contextmanager
def gateway_rig(queue_capacity: int) -> Iterator[tuple[Sim, Gateway]]:
    """A simulator and a gateway with limits high enough not to be measured."""
    pin(os.getpid(), 1)
    sim = start_sim("--latency-ms", "0", "--jitter-ms", "0", "--completion-tokens", "8")
    pin(sim.proc.pid, 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gw = make_gateway(
                Path(tmp),
                [{"endpoint_id": "sim", "url": sim.url, "kind": "openai", "capacity": 4096}],
                limits={
                    "rate_limit_rps": 10_000_000,
                    "rate_limit_burst": 10_000_000,
                    "queue_capacity": queue_capacity,
                },
                env={"AIMESH_LOG_LEVEL": "warning"},
            )
            gw.start()
            assert gw.proc is not None
            pin(gw.proc.pid, 0)
            try:
                yield sim, gw
            finally:
                gw.stop()
    finally:
        sim.stop()
