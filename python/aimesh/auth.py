"""Who may do what: the one key check behind the HTTP and QUIC adapters.

Two kinds of bearer key exist. The operator's admin key
(``AIMESH_ADMIN_KEY``) manages tenants, endpoints and everything else; a
tenant key (``amk_...``, see :mod:`aimesh.tenancy.keys`) acts only inside
its tenant. With an admin key configured every API call needs a key;
without one (local development on loopback) a caller without a key is the
default tenant, and admin changes are allowed only on loopback.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aimesh.errors import AuthenticationError, PermissionDeniedError
from aimesh.tenancy.keys import key_id_of
from aimesh.tenancy.registry import TenantRegistry


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``tenant_id`` "" is the default tenant;
    ``key_id`` names the tenant key used (checked again on long-lived
    connections, so a revocation ends them)."""

    tenant_id: str = ""
    admin: bool = False
    key_id: str = ""


class Authenticator:
    """Checks bearer keys in constant time; never logs or echoes them."""

    def __init__(
        self,
        admin_key: str = "",
        *,
        admin_open: bool = False,
        registry: TenantRegistry | None = None,
    ) -> None:
        self._admin_key = admin_key.encode()
        # True only when bound to loopback without an admin key (local dev).
        self.admin_open = admin_open and not admin_key
        self.registry = registry

    @property
    def keys_required(self) -> bool:
        return bool(self._admin_key)

    def identify(self, token: str | None) -> Principal:
        """The caller behind a bearer key (or behind no key, when keys are
        not required); ``AuthenticationError`` (401) otherwise."""
        if token:
            if self._admin_key and hmac.compare_digest(token.encode(), self._admin_key):
                return Principal(admin=True)
            tenant = self.registry.authenticate(token) if self.registry else None
            if tenant is not None:
                return Principal(tenant.tenant_id, key_id=key_id_of(token) or "")
            if self._admin_key:
                raise AuthenticationError("invalid_api_key", "the key is not valid")
            # No keys required: clients that must send some key (the OpenAI
            # SDK) are the default tenant. A bad *tenant* key still fails.
        if self._admin_key:
            raise AuthenticationError("missing_api_key", "Authorization: Bearer <key> required")
        return Principal(admin=self.admin_open)

    def require_admin(self, token: str | None) -> Principal:
        """Tenant, endpoint and metrics management: the admin key, or an
        open loopback server."""
        self._check_admin_enabled()
        return self.ensure_admin(self.identify(token))

    def ensure_admin(self, principal: Principal) -> Principal:
        """:meth:`require_admin` for a caller already identified."""
        self._check_admin_enabled()
        if not principal.admin:
            raise PermissionDeniedError("admin_only", "this operation needs the admin key")
        return principal

    def _check_admin_enabled(self) -> None:
        if not self._admin_key and not self.admin_open:
            raise PermissionDeniedError(
                "admin_key_required",
                "admin operations are disabled on a public address unless AIMESH_ADMIN_KEY is set",
            )

    def still_valid(self, principal: Principal) -> bool:
        """False once the tenant key a connection authenticated with is
        revoked (or its tenant disabled)."""
        if not principal.key_id or self.registry is None:
            return True
        return self.registry.key_active(principal.key_id)
