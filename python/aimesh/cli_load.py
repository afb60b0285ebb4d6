"""``aimesh send --file`` and ``aimesh bench``: many messages through the
SDK with a progress bar, then a summary table.

Both drive the async SDK with a fixed number of requests in flight and count
every outcome: acknowledgment statuses, refusals by error code, tokens,
endpoints and latency percentiles (the native histogram).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aimesh import _native
from aimesh.client import AsyncAiMeshClient
from aimesh.errors import AiMeshError, ValidationError
from aimesh.models import AIMessage

#: Statuses that count as delivered (or safely accepted).
OK_STATUSES = ("success", "received", "duplicate")


@dataclass
class Summary:
    """What a run did."""

    outcomes: Counter[str] = field(default_factory=Counter)
    endpoints: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    latency: _native.LatencyHistogram = field(default_factory=_native.LatencyHistogram)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> bool:
        return all(k in OK_STATUSES for k in self.outcomes)

    def table(self, title: str) -> Table:
        t = Table(title=title)
        t.add_column("metric")
        t.add_column("value", justify="right")
        rate = self.total / self.seconds if self.seconds > 0 else 0.0
        t.add_row("messages", str(self.total))
        for outcome, n in sorted(self.outcomes.items()):
            t.add_row(f"  {outcome}", str(n))
        t.add_row("wall time", f"{self.seconds:.2f} s")
        t.add_row("throughput", f"{rate:,.1f} msgs/s")
        if self.latency.count:
            for q in (50.0, 99.0, 99.9):
                t.add_row(f"latency P{q:g}", f"{self.latency.percentile(q):.2f} ms")
        t.add_row("tokens used", f"{self.tokens:,}")
        for endpoint, n in self.endpoints.most_common():
            t.add_row(f"endpoint {endpoint}", str(n))
        return t


def read_prompts(path: Path, defaults: dict[str, Any]) -> Iterator[AIMessage | ValidationError]:
    """Messages of a JSON-lines file, one per line: an AIMessage JSON object
    (``agent_id``, ``payload`` or ``payload_text``, ...), ``{"prompt": ...}``
    or a JSON string; missing fields come from ``defaults``. A bad line
    yields a ``ValidationError`` naming it (the run goes on)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if isinstance(data, str):
                    data = {"payload_text": data}
                if not isinstance(data, dict):
                    raise ValidationError("invalid_line", "a line must be a JSON object or string")
                if "prompt" in data:
                    data["payload_text"] = data.pop("prompt")
                merged = {**defaults, **data}
                if "metadata" in defaults and "metadata" in data:
                    merged["metadata"] = {**defaults["metadata"], **data["metadata"]}
                yield AIMessage.from_json_dict(merged)
            except (ValueError, AiMeshError) as e:
                message = e.message if isinstance(e, AiMeshError) else str(e)
                yield ValidationError("invalid_line", f"{path}:{number}: {message}")


async def run_load(
    client: AsyncAiMeshClient,
    messages: Iterator[AIMessage | ValidationError] | AsyncIterator[AIMessage],
    *,
    total: int | None,
    concurrency: int,
    mode: str,
    label: str,
    console: Console,
    results: IO[str] | None = None,
) -> Summary:
    """Send every message with ``concurrency`` in flight; a progress bar on
    ``console`` while it runs."""
    summary = Summary()
    source = iter(messages) if not hasattr(messages, "__anext__") else messages
    lock = asyncio.Lock()

    async def next_message() -> AIMessage | ValidationError | None:
        async with lock:
            if isinstance(source, Iterator):
                return next(source, None)
            try:
                return await source.__anext__()
            except StopAsyncIteration:
                return None

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )

    async def worker(task_id: Any) -> None:
        while (item := await next_message()) is not None:
            if isinstance(item, ValidationError):
                summary.outcomes["invalid_line"] += 1
                console.print(f"[yellow]skipped[/] {item.message}")
                progress.advance(task_id)
                continue
            t0 = time.perf_counter()
            record: dict[str, Any] = {"message_id": item.message_id}
            try:
                ack = await client.send_message(item, mode=mode)
                summary.latency.record((time.perf_counter() - t0) * 1000)
                outcome = ack.status.value
                if ack.status.value == "failed":
                    outcome = f"failed:{ack.error_code}"
                summary.tokens += ack.tokens_used
                if ack.endpoint_id:
                    summary.endpoints[ack.endpoint_id] += 1
                record.update(ack.to_json_dict())
            except AiMeshError as e:
                outcome = f"rejected:{e.code}"
                record.update({"status": "rejected", "error_code": e.code, "error": e.message})
            summary.outcomes[outcome] += 1
            if results is not None:
                results.write(json.dumps(record, default=str) + "\n")
            progress.advance(task_id)

    start = time.perf_counter()
    with progress:
        task_id = progress.add_task(label, total=total)
        await asyncio.gather(*(worker(task_id) for _ in range(max(1, concurrency))))
    summary.seconds = time.perf_counter() - start
    return summary


def generated(count: int, agent: str, model: str | None, payload_bytes: int) -> Iterator[AIMessage]:
    """``count`` distinct messages (unique payloads: no dedup hits)."""
    run = uuid.uuid4().hex[:8]
    metadata = {"model": model} if model else {}
    for i in range(count):
        head = f"bench {run} {i} ".encode()
        payload = head + b"x" * max(0, payload_bytes - len(head))
        yield AIMessage(agent_id=agent, payload=payload, metadata=dict(metadata))


def stderr_console() -> Console:
    # Progress and notes on stderr; the summary table on stdout.
    return Console(file=sys.stderr)
