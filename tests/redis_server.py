"""A real ``redis-server`` process on loopback for tests (never a mock).

The server keeps nothing on disk (``--save "" --appendonly no``), listens on
127.0.0.1 only, and every wait is bounded. If ``redis-server`` is missing the
start FAILS loudly: CI installs it (.ci/run), so a skip would hide a broken
environment.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis on ``port`` answers PING (raw RESP, no client);
    NOAUTH (a ``--requirepass`` server) is an answer too."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """``with RedisServer() as r:`` a fresh server at ``r.url``; ``kill()``
    (SIGKILL), ``restart()`` (same port, empty data) and ``stop()``."""

    def __init__(
        self, binary: str = REDIS_SERVER, port: int | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.binary = binary
        self.extra_args = extra_args  # e.g. ("--requirepass", "pw")
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aimesh-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._fixed_port = port is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 10.0, *, _attempts: int = 3) -> RedisServer:
        if not Path(self.binary).exists():
            raise RuntimeError(
                f"{self.binary} is not installed (apt-get install redis-server; .ci/run does it)"
            )
        options = [
            *("--port", str(self.port)),
            *("--bind", "127.0.0.1"),
            *("--save", ""),  # nothing on disk
            *("--appendonly", "no"),
            *("--dir", str(self.dir)),
            *("--protected-mode", "yes"),
        ]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, *options, *self.extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                new_log = self.log_text()[log_start:]
                if not self._fixed_port and "in use" in new_log and _attempts > 1:
                    # Another process took the free port first: a new one
                    # (only before the first successful start).
                    self.port = free_port()
                    return self.start(timeout, _attempts=_attempts - 1)
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}:\n{self.log_text()[-2000:]}"
                )
            if ping(self.port):
                self._fixed_port = True  # restart() must reuse this port
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its port but answers nothing (a hung
        server: clients must time out rather than wait)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> RedisServer:
        """Start again on the SAME port (after ``kill()`` or ``stop()``)."""
        self._terminate()
        return self.start()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()  # a frozen process cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def stop(self) -> None:
        self._terminate()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
