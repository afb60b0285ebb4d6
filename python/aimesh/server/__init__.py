"""The AiMesh server: HTTP and QUIC adapters over one Mesh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import httpx
import uvicorn

from aimesh import telemetry
from aimesh.config import AiMeshConfig, SimulatorConfig, is_loopback, parse_addr
from aimesh.mesh import AiMesh
from aimesh.server.app import create_app
from aimesh.server.protocol import guarded_protocol

__all__ = ["create_app", "serve"]

log = logging.getLogger("aimesh.server")


def start_simulators(sims: list[SimulatorConfig]) -> list[subprocess.Popen[bytes]]:
    """Start the upstream simulators a demo config asks for, and wait until
    each answers ``/health``."""
    procs = []
    for sim in sims:
        cmd = [
            sys.executable,
            "-m",
            "aimesh.sim",
            "--host",
            sim.host,
            "--port",
            str(sim.port),
            *sim.args,
        ]
        procs.append(subprocess.Popen(cmd))
    for sim, proc in zip(sims, procs, strict=True):
        url = f"http://{sim.host}:{sim.port}/health"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"simulator on port {sim.port} exited with {proc.returncode}")
            with suppress(httpx.HTTPError):
                if httpx.get(url, timeout=0.5).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"simulator on port {sim.port} did not start")
        log.info("upstream simulator listening on %s:%d", sim.host, sim.port)
    return procs


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM/SIGINT that was handled by a graceful
    drain ends the process with status 0 instead of being re-raised."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(config: AiMeshConfig | None = None) -> None:
    """Run the server until SIGINT/SIGTERM, then drain in-flight messages."""
    cfg = config or AiMeshConfig.load()
    host, port = parse_addr(cfg.bind_addr)
    admin_open = is_loopback(host) and not cfg.admin_key
    if not is_loopback(host) and not cfg.admin_key:
        log.warning(
            "bound to %s without AIMESH_ADMIN_KEY: endpoint and budget changes are disabled", host
        )
    # The storage writer thread and the event loop hand the GIL back and
    # forth on every storage call; the default 5 ms switch interval would
    # add up to 5 ms to each of those hand-offs under load.
    sys.setswitchinterval(0.0005)
    procs = start_simulators(cfg.simulators) if cfg.simulators else []
    telemetry.configure()  # on only with an OTLP endpoint and the otel extra
    try:
        mesh = AiMesh(cfg)
        services = []
        if cfg.quic_enabled:
            from aimesh.auth import Authenticator
            from aimesh.quic.server import QuicListener

            auth = Authenticator(cfg.admin_key, admin_open=admin_open, registry=mesh.tenants)
            services.append(QuicListener(mesh, auth))
        app = create_app(mesh, admin_open=admin_open, services=services)
        server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level=os.environ.get("AIMESH_LOG_LEVEL", "info").lower(),
                # uvicorn's records go through the root handler (JSON lines).
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=15,
                limit_concurrency=None,
                # httptools with a deadline and a size cap on each request
                # head (uvicorn has neither for httptools; see protocol.py).
                http=guarded_protocol(
                    cfg.header_timeout_s,
                    body_timeout=cfg.body_timeout_s,
                    max_connections_per_ip=cfg.max_connections_per_ip,
                ),
                server_header=False,
            )
        )
        asyncio.run(server.serve())
    finally:
        telemetry.shutdown()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            with suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
