"""What is stored of tenants and their keys (never a key itself)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aimesh.errors import ValidationError

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant_id(tenant_id: Any) -> str:
    """A tenant id: 1-63 characters of ``[a-z0-9_-]``, starting with a
    letter or digit (so it can never collide with internal names)."""
    if not isinstance(tenant_id, str) or not _TENANT_ID.match(tenant_id):
        raise ValidationError(
            "invalid_tenant_id", "tenant_id must match ^[a-z0-9][a-z0-9_-]{0,62}$"
        )
    return tenant_id


@dataclass(slots=True)
class Tenant:
    tenant_id: str
    tier: str
    name: str = ""
    created_at_ms: int = 0
    disabled_at_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at_ms is None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "name": self.name,
            "tier": self.tier,
            "created_at_ms": self.created_at_ms,
            "disabled": not self.active,
        }


@dataclass(slots=True)
class ApiKeyRecord:
    key_id: str
    tenant_id: str
    key_hash: str
    created_at_ms: int
    revoked_at_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None

    def to_json_dict(self) -> dict[str, Any]:
        """Identification only: the prefix, never the hash."""
        return {
            "key_id": self.key_id,
            "prefix": f"amk_{self.key_id}",
            "created_at_ms": self.created_at_ms,
            "revoked": not self.active,
            "revoked_at_ms": self.revoked_at_ms,
        }
