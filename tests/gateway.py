"""Run real gateway and simulator processes for integration tests.

Everything listens on 127.0.0.1 with ports picked by the OS; every wait is
bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Sim:
    """An upstream simulator process."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_sim/stats", timeout=5).json())

    def configure(self, **settings: Any) -> None:
        httpx.post(f"{self.url}/_sim/config", json=settings, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sim/reset", timeout=5).raise_for_status()

    def stop(self) -> None:
        stop(self.proc)


def start_sim(*args: str) -> Sim:
    port = free_port()
    cmd = [sys.executable, "-m", "aimesh.sim", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return Sim(port, proc)


@dataclass
class Gateway:
    """An ``aimesh serve`` process with its config and data directory."""

    port: int
    quic_port: int
    data_dir: Path
    config_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def certificate(self) -> Path:
        """The self-signed QUIC certificate the gateway made on first start."""
        return self.data_dir / "quic-cert.pem"

    def start(self) -> Gateway:
        log = self.data_dir.parent / f"gateway-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aimesh.cli", "serve", "--config", str(self.config_path)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"{self.url}/ready", self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_config(
    path: Path,
    endpoints: list[dict[str, Any]],
    *,
    limits: dict[str, Any] | None = None,
    delivery: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
    budgets: list[dict[str, Any]] | None = None,
    tiers: dict[str, dict[str, Any]] | None = None,
    tenants: list[dict[str, Any]] | None = None,
) -> None:
    lines: list[str] = []
    for name, table in (("limits", limits), ("delivery", delivery), ("routing", routing)):
        if table:
            lines.append(f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for ep in endpoints:
        lines.append("[[endpoints]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in ep.items()]
    for b in budgets or []:
        lines.append("[[budgets]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in b.items()]
    for name, tier in (tiers or {}).items():
        lines.append(f"[tiers.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in tier.items()]
    for t in tenants or []:
        lines.append("[[tenants]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
    path.write_text("\n".join(lines) + "\n")


def make_gateway(
    tmp: Path,
    endpoints: list[dict[str, Any]],
    *,
    env: dict[str, str] | None = None,
    **config: Any,
) -> Gateway:
    port = free_port()
    quic_port = free_udp_port()
    data_dir = tmp / "data"
    cfg = tmp / "aimesh.toml"
    write_config(cfg, endpoints, **config)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")}
    full_env.update(
        {
            "AIMESH_BIND_ADDR": f"127.0.0.1:{port}",
            "AIMESH_QUIC_ADDR": f"127.0.0.1:{quic_port}",
            "AIMESH_DATA_DIR": str(data_dir),
            "AIMESH_LOG_LEVEL": "warning",
        }
    )
    full_env.update(env or {})
    return Gateway(port, quic_port, data_dir, cfg, full_env)
