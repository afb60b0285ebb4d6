"""Configuration: defaults, a TOML file (``AIMESH_CONFIG``) and environment
variables, in that order of precedence (environment wins).

Upstream API keys are never read from the file: an endpoint names the
environment variable that holds its key (``api_key_env``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimesh.errors import ValidationError
from aimesh.models import EndpointMetrics
from aimesh.tenancy.tiers import BUILTIN_TIERS, Tier, parse_tiers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass(slots=True)
class BudgetConfig:
    """A budget to create at start-up (kept if it already exists)."""

    agent_id: str
    tokens: int
    reset_at: int | None = None
    period_s: int | None = None


@dataclass(slots=True)
class TenantConfig:
    """A tenant to create at start-up (kept as it is if it already exists;
    its keys are minted with ``aimesh tenants rotate-key``)."""

    tenant_id: str
    tier: str = "free"
    name: str = ""


@dataclass(slots=True)
class SimulatorConfig:
    """An upstream simulator that ``aimesh serve`` starts beside itself
    (for the offline demo config only)."""

    port: int
    host: str = "127.0.0.1"
    args: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AiMeshConfig:
    """Every setting of a Mesh and its server, with production defaults."""

    # server
    bind_addr: str = "0.0.0.0:9000"
    quic_addr: str = "0.0.0.0:9001"
    data_dir: str = ".aimesh-data"
    redis_url: str = ""
    admin_key: str = ""
    # HTTP: a request's line and headers must arrive within this (slowloris)
    header_timeout_s: float = 10.0
    # HTTP: a request's whole body must arrive within this after its head
    body_timeout_s: float = 30.0
    # HTTP: open connections from one address (0 = no cap; behind a reverse
    # proxy every connection comes from the proxy's address)
    max_connections_per_ip: int = 1024
    # QUIC transport ("off" in quic_addr disables it)
    tls_cert: str = ""  # empty: a self-signed one is made in data_dir
    tls_key: str = ""
    quic_idle_timeout_s: float = 60.0
    quic_max_streams: int = 256  # concurrent streams per connection
    quic_max_connections_per_peer: int = 64
    quic_max_pending_per_stream: int = 4096  # unanswered frames per stream
    # limits
    rate_limit_rps: float = 100.0
    rate_limit_burst: float = 0.0  # 0 = same as rate_limit_rps
    global_rate_limit_rps: float = 0.0  # 0 = no global limit
    dedup_ttl_s: float = 3600.0
    queue_capacity: int = 10_000
    max_inflight: int = 1024
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_body_bytes: int = 32 * 1024 * 1024
    max_batch_messages: int = 1000
    max_payload_bytes: int = 1024 * 1024
    # routing
    w_cost: float = 0.4
    w_load: float = 0.3
    w_latency: float = 0.3
    normalize: bool = True
    # delivery
    timeout_s: float = 30.0
    max_attempts_per_endpoint: int = 2
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0
    health_check_interval_s: float = 0.0  # 0 = off
    async_workers: int = 64
    durable_sync: bool = True  # fsync (synchronous=FULL) before a 202
    # content
    endpoints: list[EndpointMetrics] = field(default_factory=list)
    budgets: list[BudgetConfig] = field(default_factory=list)
    tiers: dict[str, Tier] = field(default_factory=lambda: dict(BUILTIN_TIERS))
    tenants: list[TenantConfig] = field(default_factory=list)
    simulators: list[SimulatorConfig] = field(default_factory=list)

    @property
    def quic_enabled(self) -> bool:
        return self.quic_addr.strip().lower() not in ("", "off", "none", "disabled")

    @property
    def effective_burst(self) -> float:
        return self.rate_limit_burst or self.rate_limit_rps

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> AiMeshConfig:
        """Defaults, then the TOML file (``path`` or ``AIMESH_CONFIG``), then
        the environment."""
        env = os.environ if env is None else env
        cfg = cls()
        path = path or env.get("AIMESH_CONFIG") or None
        if path:
            cfg.apply_toml(Path(path))
        cfg.apply_env(env)
        cfg.check()
        return cfg

    def apply_toml(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ValidationError("config_not_found", f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ValidationError("invalid_config", f"{path}: {e}") from None
        base = path.parent
        scalars = _SCALARS
        for section in ("server", "limits", "routing", "delivery"):
            table = data.get(section, {})
            if not isinstance(table, dict):
                raise ValidationError("invalid_config", f"[{section}] must be a table")
            for key, value in table.items():
                if key not in scalars:
                    raise ValidationError("invalid_config", f"unknown setting {section}.{key}")
                setattr(self, key, _coerce(key, value, scalars[key]))
        server = data.get("server", {})
        for key in ("data_dir", "tls_cert", "tls_key"):
            value = getattr(self, key)
            if key in server and value and not os.path.isabs(value):
                setattr(self, key, str(base / value))
        for ep in data.get("endpoints", []):
            self.endpoints.append(EndpointMetrics.from_json_dict(ep))
        for b in data.get("budgets", []):
            try:
                self.budgets.append(BudgetConfig(**b))
            except TypeError as e:
                raise ValidationError("invalid_config", f"[[budgets]]: {e}") from None
        tiers = data.get("tiers", {})
        if not isinstance(tiers, dict):
            raise ValidationError("invalid_config", "[tiers] must be a table of tiers")
        self.tiers = parse_tiers(tiers)
        for t in data.get("tenants", []):
            try:
                self.tenants.append(TenantConfig(**t))
            except TypeError as e:
                raise ValidationError("invalid_config", f"[[tenants]]: {e}") from None
        for s in data.get("simulators", []):
            try:
                self.simulators.append(SimulatorConfig(**s))
            except TypeError as e:
                raise ValidationError("invalid_config", f"[[simulators]]: {e}") from None

    def apply_env(self, env: Mapping[str, str]) -> None:
        for var, key in _ENV.items():
            if var in env and env[var] != "":
                setattr(self, key, _coerce(key, env[var], _SCALARS[key]))

    def check(self) -> None:
        """Reject settings that cannot work, with a clear message."""
        if self.rate_limit_rps <= 0:
            raise ValidationError("invalid_config", "rate_limit_rps must be > 0")
        if self.queue_capacity <= 0 or self.max_inflight <= 0:
            raise ValidationError("invalid_config", "queue_capacity and max_inflight must be > 0")
        if min(self.w_cost, self.w_load, self.w_latency) < 0:
            raise ValidationError("invalid_config", "routing weights must be >= 0")
        if min(self.quic_max_streams, self.quic_max_connections_per_peer) <= 0:
            raise ValidationError("invalid_config", "QUIC stream and connection limits must be > 0")
        if self.header_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValidationError(
                "invalid_config", "header_timeout_s and body_timeout_s must be > 0"
            )
        if self.max_connections_per_ip < 0:
            raise ValidationError("invalid_config", "max_connections_per_ip must be >= 0")
        if self.quic_max_pending_per_stream <= 0 or self.quic_idle_timeout_s <= 0:
            raise ValidationError("invalid_config", "QUIC pending and idle limits must be > 0")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValidationError("invalid_config", "set both AIMESH_TLS_CERT and AIMESH_TLS_KEY")
        for t in self.tenants:
            if t.tier not in self.tiers:
                raise ValidationError(
                    "invalid_config", f"tenant {t.tenant_id!r} has unknown tier {t.tier!r}"
                )
        ids = [e.endpoint_id for e in self.endpoints]
        if len(ids) != len(set(ids)):
            raise ValidationError("invalid_config", "endpoint ids must be unique")


_SCALARS: dict[str, type] = {
    "bind_addr": str,
    "quic_addr": str,
    "data_dir": str,
    "redis_url": str,
    "admin_key": str,
    "header_timeout_s": float,
    "body_timeout_s": float,
    "max_connections_per_ip": int,
    "tls_cert": str,
    "tls_key": str,
    "quic_idle_timeout_s": float,
    "quic_max_streams": int,
    "quic_max_connections_per_peer": int,
    "quic_max_pending_per_stream": int,
    "rate_limit_rps": float,
    "rate_limit_burst": float,
    "global_rate_limit_rps": float,
    "dedup_ttl_s": float,
    "queue_capacity": int,
    "max_inflight": int,
    "max_body_bytes": int,
    "max_batch_body_bytes": int,
    "max_batch_messages": int,
    "max_payload_bytes": int,
    "w_cost": float,
    "w_load": float,
    "w_latency": float,
    "normalize": bool,
    "timeout_s": float,
    "max_attempts_per_endpoint": int,
    "breaker_failures": int,
    "breaker_cooldown_s": float,
    "health_check_interval_s": float,
    "async_workers": int,
    "durable_sync": bool,
}

#: Environment variables and the setting each one overrides.
_ENV: dict[str, str] = {
    "AIMESH_BIND_ADDR": "bind_addr",
    "AIMESH_QUIC_ADDR": "quic_addr",
    "AIMESH_DATA_DIR": "data_dir",
    "AIMESH_REDIS_URL": "redis_url",
    "AIMESH_ADMIN_KEY": "admin_key",
    "AIMESH_HEADER_TIMEOUT_S": "header_timeout_s",
    "AIMESH_BODY_TIMEOUT_S": "body_timeout_s",
    "AIMESH_MAX_CONNECTIONS_PER_IP": "max_connections_per_ip",
    "AIMESH_TLS_CERT": "tls_cert",
    "AIMESH_TLS_KEY": "tls_key",
    "AIMESH_RATE_LIMIT_RPS": "rate_limit_rps",
    "AIMESH_RATE_LIMIT_BURST": "rate_limit_burst",
    "AIMESH_GLOBAL_RATE_LIMIT_RPS": "global_rate_limit_rps",
    "AIMESH_DEDUP_TTL": "dedup_ttl_s",
    "AIMESH_QUEUE_CAPACITY": "queue_capacity",
    "AIMESH_MAX_INFLIGHT": "max_inflight",
    "AIMESH_TIMEOUT_S": "timeout_s",
}


def _coerce(key: str, value: Any, kind: type) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if isinstance(value, bool):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValidationError(
            "invalid_config", f"{key} must be a {kind.__name__}, got {value!r}"
        ) from None


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[::1]:port"``) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValidationError("invalid_config", f"address {addr!r} must be host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    """True for addresses only reachable from this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")
