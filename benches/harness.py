"""Tiny benchmark harness: time a function, print one table, write JSON.

Each ``benches/bench_*.py`` module defines ``run(h: Harness) -> None`` and
calls ``h.measure(...)`` or ``h.record(...)``; ``benches/run.py`` runs them
all, prints the table and writes ``bench-results/results.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    suite: str
    name: str
    value: float
    unit: str
    detail: dict[str, Any] = field(default_factory=dict)


class Harness:
    """Collects results; ``quick`` shrinks workloads for smoke runs."""

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.results: list[Result] = []
        self.suite = ""

    def record(self, name: str, value: float, unit: str, **detail: Any) -> None:
        self.results.append(Result(self.suite, name, value, unit, detail))
        print(f"  {self.suite:<10} {name:<48} {_fmt(value):>14} {unit}", flush=True)

    def measure(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        ops_per_call: int = 1,
        bytes_per_call: int = 0,
        min_time_s: float = 1.0,
        repeats: int = 5,
    ) -> float:
        """Run ``fn`` repeatedly; record the best of ``repeats`` rounds as
        operations per second (and GB/s when ``bytes_per_call`` is given)."""
        fn()  # warm-up
        calls = 1
        while True:  # find a call count that takes ~min_time_s / repeats
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            dt = time.perf_counter() - t0
            if dt >= min_time_s / repeats or calls >= 1 << 24:
                break
            calls *= 2
        best = dt
        for _ in range(repeats - 1):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, time.perf_counter() - t0)
        ops = calls * ops_per_call / best
        self.record(name, ops, "ops/s", calls=calls, seconds=best)
        if bytes_per_call:
            self.record(name + " (throughput)", calls * bytes_per_call / best / 1e9, "GB/s")
        return ops

    def write_json(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "quick": self.quick,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(path, "w") as f:
            json.dump({"meta": meta, "results": [asdict(r) for r in self.results]}, f, indent=2)


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:,.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:,.1f}k"
    return f"{v:,.3f}"
