"""Service tiers: what a tenant may do. Four are built in (free, starter,
pro, enterprise); a config file may change them or add custom ones::

    [tiers.team]
    base = "pro"                 # inherit every unset field (default: free)
    requests_per_second = 50
    allowed_groups = ["gpt-4o-mini"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from aimesh.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Tier:
    """The limits of a tier. ``None`` means unlimited; an empty
    ``allowed_groups`` allows every route group."""

    name: str
    #: Token bucket: sustained requests per second and the burst above it.
    requests_per_second: float
    burst: float
    #: Exact sliding window over one minute (smooths bursts the bucket allows).
    requests_per_minute: int
    tokens_per_month: int | None
    max_agents: int | None
    max_priority: int
    max_payload_bytes: int
    #: Messages of the tenant in delivery at once (sync path).
    max_concurrent: int
    allowed_groups: tuple[str, ...] = field(default_factory=tuple)

    def allows_group(self, group: str) -> bool:
        return not self.allowed_groups or group in self.allowed_groups

    def to_json_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["allowed_groups"] = list(self.allowed_groups)
        return d


KIB = 1024
BUILTIN_TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier("free", 5, 10, 120, 100_000, 5, 50, 64 * KIB, 4),
        Tier("starter", 20, 40, 900, 2_000_000, 25, 70, 256 * KIB, 16),
        Tier("pro", 100, 200, 4_800, 20_000_000, 250, 90, 1024 * KIB, 64),
        Tier("enterprise", 1_000, 2_000, 48_000, None, None, 100, 1024 * KIB, 512),
    )
}

_INT_FIELDS = ("requests_per_minute", "max_priority", "max_payload_bytes", "max_concurrent")
_OPT_INT_FIELDS = ("tokens_per_month", "max_agents")
_FLOAT_FIELDS = ("requests_per_second", "burst")


def parse_tiers(table: Mapping[str, Any]) -> dict[str, Tier]:
    """The built-in tiers updated by a ``[tiers.*]`` config table."""
    tiers = dict(BUILTIN_TIERS)
    for name, spec in table.items():
        if not isinstance(spec, Mapping):
            raise _bad(f"[tiers.{name}] must be a table")
        if not _valid_name(name):
            raise _bad(f"tier name {name!r} must match [a-z0-9_-]{{1,64}}")
        base_name = spec.get("base", name if name in tiers else "free")
        if base_name not in tiers:
            raise _bad(f"[tiers.{name}] base {base_name!r} is not a known tier")
        changes: dict[str, Any] = {"name": name}
        for key, value in spec.items():
            if key == "base":
                continue
            changes[key] = _field(name, key, value)
        tier = replace(tiers[base_name], **changes)
        if tier.burst < 1 or tier.requests_per_second <= 0 or tier.requests_per_minute < 1:
            raise _bad(f"[tiers.{name}] rates must be > 0 (burst >= 1)")
        if not 0 <= tier.max_priority <= 100:
            raise _bad(f"[tiers.{name}] max_priority must be 0-100")
        if tier.max_payload_bytes < 1 or tier.max_concurrent < 1:
            raise _bad(f"[tiers.{name}] max_payload_bytes and max_concurrent must be >= 1")
        tiers[name] = tier
    return tiers


def _field(tier: str, key: str, value: Any) -> Any:
    where = f"tiers.{tier}.{key}"
    if key in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(f"{where} must be a number")
        return float(value)
    if key in _INT_FIELDS or key in _OPT_INT_FIELDS:
        # 0 means unlimited for the optional quotas (TOML has no null).
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(f"{where} must be a non-negative integer")
        if key in _OPT_INT_FIELDS and value == 0:
            return None
        return value
    if key == "allowed_groups":
        if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
            raise _bad(f"{where} must be a list of route group names")
        return tuple(value)
    raise _bad(f"unknown setting {where}")


def _valid_name(name: str) -> bool:
    return (
        0 < len(name) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
        and name == name.lower()
    )


def _bad(message: str) -> ValidationError:
    return ValidationError("invalid_config", message)
