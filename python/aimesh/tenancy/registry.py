"""Tenants and their API keys, in memory for the hot path and in storage
for durability. Every change is written before it is answered; a
revocation takes effect in memory first, so no request is admitted with a
key after its revocation began."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aimesh.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from aimesh.tenancy import keys
from aimesh.tenancy.records import ApiKeyRecord, Tenant, check_tenant_id
from aimesh.tenancy.tiers import Tier

if TYPE_CHECKING:
    from aimesh.storage.base import Storage

#: Active keys one tenant may hold at once (rotation overlaps two).
MAX_KEYS_PER_TENANT = 16


def _now_ms() -> int:
    return int(time.time() * 1000)


class TenantRegistry:
    """Who the tenants are, their tiers and keys."""

    def __init__(self, tiers: dict[str, Tier]) -> None:
        self.tiers = tiers
        self.tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKeyRecord] = {}
        # Revoked in memory, not yet saved (a failed write): a retry saves them.
        self._unsaved: set[str] = set()

    async def load(self, storage: Storage) -> None:
        self.tenants = {t.tenant_id: t for t in await storage.list_tenants()}
        self._keys = {k.key_id: k for k in await storage.list_api_keys()}

    # -- lookups ------------------------------------------------------------------

    def authenticate(self, token: str) -> Tenant | None:
        """The tenant of a tenant key; None if ``token`` is not shaped like
        one; ``AuthenticationError`` if it is unknown, revoked or its tenant
        is disabled (one answer for all three: no oracle)."""
        key_id = keys.key_id_of(token)
        if key_id is None:
            return None
        record = self._keys.get(key_id)
        # Hash even when the id is unknown, so timing does not tell them apart.
        ok = keys.matches(token, record.key_hash if record else "0" * 64)
        tenant = self.tenants.get(record.tenant_id) if record else None
        if not ok or record is None or not record.active or tenant is None or not tenant.active:
            raise AuthenticationError("invalid_api_key", "the key is not valid")
        return tenant

    def key_active(self, key_id: str) -> bool:
        record = self._keys.get(key_id)
        if record is None or not record.active:
            return False
        tenant = self.tenants.get(record.tenant_id)
        return tenant is not None and tenant.active

    def get(self, tenant_id: str) -> Tenant:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFoundError("tenant_not_found", f"no tenant {tenant_id!r}")
        return tenant

    def tier(self, name: str) -> Tier:
        tier = self.tiers.get(name)
        if tier is None:
            raise ValidationError(
                "invalid_tier", f"tier must be one of {', '.join(sorted(self.tiers))}"
            )
        return tier

    def active_tier(self, tenant_id: str) -> Tier | None:
        """The tier a message of ``tenant_id`` is admitted under (None for
        the default tenant); a tenant unknown or disabled since its key was
        checked is refused like a bad key."""
        if not tenant_id:
            return None
        tenant = self.tenants.get(tenant_id)
        if tenant is None or not tenant.active:
            raise AuthenticationError("invalid_api_key", "the key is not valid")
        return self.tier(tenant.tier)

    def tier_of(self, tenant_id: str) -> Tier | None:
        """The tier of a tenant; None for the default tenant."""
        tenant = self.tenants.get(tenant_id)
        return None if tenant is None else self.tiers.get(tenant.tier)

    def keys_of(self, tenant_id: str) -> list[ApiKeyRecord]:
        return [k for k in self._keys.values() if k.tenant_id == tenant_id]

    # -- changes ------------------------------------------------------------------

    async def create(
        self, storage: Storage, tenant_id: str, tier: str, name: str = ""
    ) -> tuple[Tenant, str]:
        """A new tenant and its first key (the key is returned once)."""
        if not await self.ensure(storage, tenant_id, tier, name):
            raise ConflictError("tenant_exists", f"tenant {tenant_id!r} already exists")
        return self.tenants[tenant_id], await self.mint_key(storage, tenant_id)

    async def ensure(self, storage: Storage, tenant_id: str, tier: str, name: str = "") -> bool:
        """Create the tenant (without a key) if absent, as for the config
        file's tenants; True if it was created."""
        check_tenant_id(tenant_id)
        self.tier(tier)
        if tenant_id in self.tenants:
            return False
        tenant = Tenant(tenant_id, tier, name, _now_ms())
        await storage.save_tenant(tenant)
        self.tenants[tenant_id] = tenant
        return True

    async def mint_key(self, storage: Storage, tenant_id: str, *, capped: bool = True) -> str:
        """Another key for the tenant; the others stay valid."""
        if not self.get(tenant_id).active:
            raise ConflictError("tenant_disabled", f"tenant {tenant_id!r} is disabled")
        active = sum(k.active for k in self.keys_of(tenant_id))
        if capped and active >= MAX_KEYS_PER_TENANT:
            raise ConflictError(
                "too_many_keys", f"a tenant holds at most {MAX_KEYS_PER_TENANT} active keys"
            )
        key_id, key = keys.generate_key()
        record = ApiKeyRecord(key_id, tenant_id, keys.key_hash(key), _now_ms())
        await storage.save_api_key(record)
        self._keys[key_id] = record
        return key

    async def rotate(self, storage: Storage, tenant_id: str) -> tuple[str, list[str]]:
        """A new key, and the ids of the older keys, all revoked."""
        old = [k.key_id for k in self.keys_of(tenant_id) if k.active]
        # Not capped: the older keys are revoked right after.
        key = await self.mint_key(storage, tenant_id, capped=False)
        return key, await self.revoke(storage, tenant_id, old)

    async def revoke(
        self, storage: Storage, tenant_id: str, key_ids: list[str] | None = None
    ) -> list[str]:
        """Revoke some (or all) of the tenant's keys, at once."""
        self.get(tenant_id)
        targets = [
            k
            for k in self.keys_of(tenant_id)
            if (k.active or k.key_id in self._unsaved) and (key_ids is None or k.key_id in key_ids)
        ]
        if key_ids is not None and len(targets) != len(set(key_ids)):
            raise NotFoundError("key_not_found", "no such active key for this tenant")
        at = _now_ms()
        # Memory first: from here on the key is refused, even while the
        # write is in flight. If the write fails the key stays refused and
        # the same call can be retried to save it.
        for k in targets:
            if k.revoked_at_ms is None:
                k.revoked_at_ms = at
            self._unsaved.add(k.key_id)
        await storage.revoke_api_keys(tenant_id, [k.key_id for k in targets], at)
        self._unsaved.difference_update(k.key_id for k in targets)
        return [k.key_id for k in targets]

    async def set_tier(self, storage: Storage, tenant_id: str, tier: str) -> Tenant:
        self.tier(tier)
        tenant = self.get(tenant_id)
        tenant.tier = tier
        await storage.save_tenant(tenant)
        return tenant

    async def disable(self, storage: Storage, tenant_id: str) -> Tenant:
        """Disable a tenant: every key is refused at once; its data stays."""
        tenant = self.get(tenant_id)
        if tenant.disabled_at_ms is None:
            tenant.disabled_at_ms = _now_ms()
        await storage.save_tenant(tenant)
        await self.revoke(storage, tenant_id)
        return tenant
