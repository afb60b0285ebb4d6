"""A bounded slowloris attacker for tests/test_abuse.py, run as its own
process so that its event loop does not share a GIL with the client whose
latency the test measures:

    python -m tests.slowloris --port 9000 --connections 500 --duration 6

Each of ``--connections`` tasks opens a TCP connection to 127.0.0.1 and
sends a request line and headers one byte every ``--interval`` seconds,
never finishing the head; when the server cuts it off, it records how
(``408`` or ``closed``) and after how long, and opens a new one, until
``--duration`` is over. Prints ``ready`` once every connection is open,
then one JSON summary line. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

HEAD = b"POST /messages HTTP/1.1\r\nHost: aimesh\r\nContent-Type: application/json\r\nX-Pad: "


async def _one(port: int, interval: float, stop_at: float, cuts: list[tuple[str, float]]) -> None:
    """One connection: dribble the head until the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    outcome = "open"
    try:
        for i in range(1 << 30):
            if time.monotonic() >= stop_at:
                break
            writer.write(HEAD[i : i + 1] if i < len(HEAD) else b"a")
            try:
                await writer.drain()
                data = await asyncio.wait_for(reader.read(64), interval)
            except asyncio.TimeoutError:
                continue  # nothing from the server yet: send the next byte
            except OSError:
                outcome = "closed"
                break
            outcome = (
                "408" if data.startswith(b"HTTP/1.1 408") else ("closed" if not data else "other")
            )
            break
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if outcome != "open":
        cuts.append((outcome, time.monotonic() - opened))


async def _attacker(
    port: int, interval: float, stop_at: float, cuts: list[tuple[str, float]]
) -> None:
    while time.monotonic() < stop_at:
        try:
            await _one(port, interval, stop_at, cuts)
        except OSError:
            cuts.append(("connect_failed", 0.0))
            await asyncio.sleep(interval)


async def attack(
    port: int, connections: int, duration: float, interval: float
) -> dict[str, object]:
    cuts: list[tuple[str, float]] = []
    stop_at = time.monotonic() + duration
    tasks = [
        asyncio.create_task(_attacker(port, interval, stop_at, cuts)) for _ in range(connections)
    ]
    await asyncio.sleep(min(0.5, duration / 4))
    print("ready", flush=True)
    # Bounded: each task ends at stop_at plus at most one interval.
    await asyncio.wait_for(asyncio.gather(*tasks), duration + 10 * interval + 10)
    outcomes: dict[str, int] = {}
    for outcome, _ in cuts:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    lifetimes = sorted(t for o, t in cuts if o in ("408", "closed"))
    return {
        "cut": len(lifetimes),
        "outcomes": outcomes,
        "max_lifetime_s": lifetimes[-1] if lifetimes else None,
        "min_lifetime_s": lifetimes[0] if lifetimes else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    summary = asyncio.run(attack(args.port, args.connections, args.duration, args.interval))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
