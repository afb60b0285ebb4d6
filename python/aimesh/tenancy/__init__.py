"""Multi-tenancy: tenants with a tier, hashed API keys, and the checks a
tier puts on each message."""

from aimesh.tenancy.records import ApiKeyRecord, Tenant, check_tenant_id
from aimesh.tenancy.tiers import BUILTIN_TIERS, Tier, parse_tiers

__all__ = ["BUILTIN_TIERS", "ApiKeyRecord", "Tenant", "Tier", "check_tenant_id", "parse_tiers"]
