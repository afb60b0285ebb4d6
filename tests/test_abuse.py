"""Abuse of a real gateway process over loopback: huge bodies, huge heads and
slowloris. The gateway must refuse early, keep its memory bounded and keep
serving normal clients. Every loop and wait here is bounded."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import openai_endpoint
from tests.gateway import Gateway, Sim

ROOT = Path(__file__).resolve().parent.parent
HEADER_TIMEOUT_S = 1.5
MB = 1024 * 1024
BODY = 100 * MB
MIB = b"x" * MB


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.fixture
def gw(sims: Callable[..., Sim], gateways: Callable[..., Gateway]) -> Iterator[Gateway]:
    sim = sims("--latency-ms", "1")
    yield gateways(
        [openai_endpoint(sim, "sim", group="gpt-4o")],
        env={"AIMESH_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)},
        limits={"rate_limit_rps": 100_000.0},
    )


def send_huge_body(
    port: int, head: bytes, chunk: Callable[[int], bytes], pid: int
) -> tuple[bytes, int, float]:
    """Send ``head`` then up to ``BODY`` bytes of body (``chunk(i)`` frames
    the i-th MiB), never holding more than one MiB, as an attacker that
    ignores the answer would; read the answer as soon as it comes. Return
    the answer, how many body bytes were sent when it arrived, and the
    gateway's peak RSS (sampled every MiB)."""
    peak = rss_mb(pid)
    answer = b""
    sent_at_answer = -1
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        s.setblocking(False)
        deadline = time.monotonic() + 30
        reset = False
        while sent < BODY and not reset and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                data = s.recv(65536)
                if not data:
                    break  # closed by the server
                if not answer:
                    sent_at_answer = sent
                answer += data
            piece = memoryview(chunk(sent // MB))
            while piece and time.monotonic() < deadline:
                try:
                    piece = piece[s.send(piece) :]
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:  # reset: the server stopped reading
                    reset = True
                    break
            sent += MB
            peak = max(peak, rss_mb(pid))
        s.settimeout(5)
        while b"\r\n\r\n" not in answer:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            if sent_at_answer < 0:
                sent_at_answer = sent
            answer += data
    return answer, sent_at_answer, max(peak, rss_mb(pid))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_100mb_body_is_refused_early_with_bounded_memory(gw: Gateway, framing: str) -> None:
    assert gw.proc is not None
    pid = gw.proc.pid
    with gw.client() as c:  # warm up: the first requests allocate caches
        for _ in range(20):
            c.post("/messages", json={"agent_id": "warm", "payload_text": "hi"})
    before = rss_mb(pid)
    if framing == "content-length":
        head = (
            b"POST /messages HTTP/1.1\r\nHost: aimesh\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(BODY).encode() + b"\r\n\r\n"
        )

        def chunk(i: int) -> bytes:
            return MIB

    else:
        head = (
            b"POST /messages HTTP/1.1\r\nHost: aimesh\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )

        def chunk(i: int) -> bytes:
            return b"%x\r\n" % MB + MIB + b"\r\n"

    t0 = time.monotonic()
    answer, sent_at_answer, peak = send_huge_body(gw.port, head, chunk, pid)
    elapsed = time.monotonic() - t0
    after = rss_mb(pid)
    print(
        f"{framing}: 413 after {sent_at_answer / MB:.0f} MiB sent, {elapsed:.2f}s; "
        f"RSS {before:.0f} -> {peak:.0f} (peak) -> {after:.0f} MiB"
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"body_too_large"' in answer
    # Refused long before the whole body was sent (the limit is 4 MiB; the
    # rest is socket buffers).
    assert 0 <= sent_at_answer < 32 * MB
    assert peak - before < 50, (before, peak, after)
    with gw.client() as c:  # still serving
        assert c.get("/health").status_code == 200


def test_huge_request_head_is_refused_with_431(gw: Gateway) -> None:
    assert gw.proc is not None
    pid = gw.proc.pid
    before = rss_mb(pid)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: aimesh\r\nX-Big: ")
        sent = 0
        try:
            while sent < 64 * MB:  # one endless header
                s.sendall(MIB)
                sent += MB
        except OSError:
            pass  # the server answered and closed
        answer = b""
        with contextlib.suppress(OSError):
            answer = s.recv(4096)
    after = rss_mb(pid)
    print(f"head: cut after {sent / MB:.0f} MiB sent; RSS {before:.0f} -> {after:.0f} MiB")
    assert sent < 16 * MB
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert after - before < 20, (before, after)


_SEQ = itertools.count()


def measure(gw: Gateway, n: int, until: float = float("inf")) -> tuple[list[float], int, float]:
    """Latencies of up to ``n`` sequential POST /messages of a normal client
    (one keep-alive connection) made before ``until`` (monotonic), how many
    failed, and the gateway's peak RSS meanwhile (MiB)."""
    assert gw.proc is not None
    samples: list[float] = []
    failed = 0
    peak = 0.0
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        for _ in range(n):
            if time.monotonic() >= until:
                break
            t = time.perf_counter()
            r = c.post("/messages", json={"agent_id": "normal", "payload_text": f"m{next(_SEQ)}"})
            samples.append(time.perf_counter() - t)
            failed += r.status_code != 200 or r.json()["status"] != "success"
            peak = max(peak, rss_mb(gw.proc.pid))
    return samples, failed, peak


def test_slowloris_is_cut_off_and_normal_clients_are_served(gw: Gateway) -> None:
    assert gw.proc is not None
    pid = gw.proc.pid
    measure(gw, 50)  # warm up
    baseline, failed, _ = measure(gw, 300)
    assert failed == 0
    fds_before, rss_before = open_fds(pid), rss_mb(pid)

    duration = 4 * HEADER_TIMEOUT_S
    attacker = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.slowloris", "--port", str(gw.port)),
            *("--connections", "500", "--duration", str(duration), "--interval", "0.25"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline().strip() == "ready"
        attack_ends = time.monotonic() + duration - 1
        fds_attack, rss_peak = open_fds(pid), rss_mb(pid)
        # Only requests made while the attack is on count.
        attacked, failed, peak = measure(gw, 300, until=attack_ends)
        rss_peak = max(rss_peak, peak)
        out, _ = attacker.communicate(timeout=duration + 30)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait(timeout=5)
    summary = json.loads(out.strip().splitlines()[-1])
    # Connections still held when the attack stops are cut within the timeout.
    time.sleep(HEADER_TIMEOUT_S + 1)
    fds_after, rss_after = open_fds(pid), rss_mb(pid)
    print(
        f"slowloris: {summary}; fds {fds_before} -> {fds_attack} (attack) -> {fds_after}; "
        f"RSS {rss_before:.0f} -> {rss_peak:.0f} (peak) -> {rss_after:.0f} MiB; "
        f"normal client P99 {p99(baseline) * 1000:.1f} ms -> {p99(attacked) * 1000:.1f} ms "
        f"(max {max(attacked) * 1000:.1f} ms, {len(attacked)} requests under attack)"
    )
    assert failed == 0 and len(attacked) >= 50
    # Every connection the server cut got a 408 (it had begun a request) or
    # a close, within the head timeout plus scheduling slack; none lived on.
    assert summary["cut"] >= 500
    assert set(summary["outcomes"]) <= {"408", "closed"}, summary
    assert summary["max_lifetime_s"] < HEADER_TIMEOUT_S + 1.5, summary
    assert fds_attack >= fds_before + 400  # the attack did reach the server
    assert fds_after < fds_before + 20
    assert rss_peak - rss_before < 50
    # Normal clients keep their latency: within 10x the baseline P99, or
    # under 250 ms when the baseline is so small (a few ms on loopback) that
    # scheduler noise from 500 attacking sockets on 2 cores dominates.
    assert p99(attacked) < max(10 * p99(baseline), 0.25), (p99(baseline), p99(attacked))
