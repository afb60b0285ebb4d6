"""``/tenants``: tenants and their API keys over HTTP, a thin adapter over
:class:`aimesh.tenancy.registry.TenantRegistry`.

The admin creates, lists, re-tiers and disables tenants. A tenant key may
read its own tenant and mint, rotate or revoke its own keys; another
tenant is "not found" to it (the answer does not tell whether it exists).
A new key is in the answer once and never again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aimesh.auth import Principal
from aimesh.errors import NotFoundError, ValidationError
from aimesh.server.app import ORJSONResponse, _wrap, parse_json, quota_json, read_body
from aimesh.tenancy.keys import key_id_of
from aimesh.tenancy.records import check_tenant_id

if TYPE_CHECKING:
    from aimesh.server.app import HttpApi

TENANT_BODY_LIMIT = 16 * 1024


class TenantsApi:
    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self.mesh = api.mesh
        self.registry = api.mesh.tenants

    def routes(self) -> list[Route]:
        return [
            Route("/tenants", _wrap(self.create), methods=["POST"]),
            Route("/tenants", _wrap(self.list), methods=["GET"]),
            Route("/tenants/{tenant_id}", _wrap(self.get), methods=["GET"]),
            Route("/tenants/{tenant_id}", _wrap(self.update), methods=["PATCH"]),
            Route("/tenants/{tenant_id}", _wrap(self.disable), methods=["DELETE"]),
            Route("/tenants/{tenant_id}/keys", _wrap(self.mint_key), methods=["POST"]),
            Route("/tenants/{tenant_id}/rotate-key", _wrap(self.rotate_key), methods=["POST"]),
            Route("/tenants/{tenant_id}/keys/{key_id}", _wrap(self.revoke_key), methods=["DELETE"]),
        ]

    # -- helpers --------------------------------------------------------------------

    def _own(self, request: Request, principal: Principal | None = None) -> str:
        """The tenant in the path, if the caller (``principal``, when already
        identified) may act on it: the admin, or a key of that very tenant
        (others: 404, as if it did not exist)."""
        tenant_id: str = request.path_params["tenant_id"]
        principal = principal or self.api.caller(request)
        if principal.tenant_id != tenant_id and not principal.admin:
            raise NotFoundError("tenant_not_found", f"no tenant {tenant_id!r}")
        self.registry.get(tenant_id)
        return tenant_id

    async def _body(self, request: Request) -> dict[str, Any]:
        data = parse_json(await read_body(request, TENANT_BODY_LIMIT))
        if not isinstance(data, dict):
            raise ValidationError("invalid_body", "the body must be a JSON object")
        return data

    async def _view(self, tenant_id: str) -> dict[str, Any]:
        tenant = self.registry.get(tenant_id)
        body = tenant.to_json_dict()
        body["tier_limits"] = self.registry.tier(tenant.tier).to_json_dict()
        body["keys"] = [k.to_json_dict() for k in self.registry.keys_of(tenant_id)]
        body["agents"] = len(self.mesh.tier_admission.agents.get(tenant_id, ()))
        body["quota"] = quota_json(await self.mesh.quota(tenant_id))
        body["usage"] = self.mesh.metrics.tenant_stats(tenant_id)
        return body

    # -- routes ---------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        self.api.require_admin(request)
        data = await self._body(request)
        tier = _text(data, "tier", "free")
        tenant, key = await self.registry.create(
            self.mesh.storage, check_tenant_id(data.get("tenant_id")), tier, _text(data, "name", "")
        )
        await self.mesh.sync_quota(tenant.tenant_id)
        body = await self._view(tenant.tenant_id)
        body["api_key"] = key
        body["key_id"] = key_id_of(key)
        return ORJSONResponse(body, status_code=201)

    async def list(self, request: Request) -> Response:
        self.api.require_admin(request)
        tenants = [t.to_json_dict() for t in sorted(self.registry.tenants.values(), key=_id)]
        return ORJSONResponse({"tenants": tenants})

    async def get(self, request: Request) -> Response:
        return ORJSONResponse(await self._view(self._own(request)))

    async def update(self, request: Request) -> Response:
        """Change a tenant's tier or name (admin only: a tenant cannot raise
        its own tier)."""
        tenant_id = self._own(request, self.api.require_admin(request))
        data = await self._body(request)
        tenant = self.registry.get(tenant_id)
        # Every field is checked before anything changes (no half update).
        tier = _text(data, "tier", tenant.tier)
        self.registry.tier(tier)
        name = _text(data, "name", tenant.name)
        if name != tenant.name:
            tenant.name = name
            await self.mesh.storage.save_tenant(tenant)
        if tier != tenant.tier:
            await self.registry.set_tier(self.mesh.storage, tenant_id, tier)
            await self.mesh.sync_quota(tenant_id)
        return ORJSONResponse(await self._view(tenant_id))

    async def disable(self, request: Request) -> Response:
        tenant_id = self._own(request, self.api.require_admin(request))
        await self.registry.disable(self.mesh.storage, tenant_id)
        return ORJSONResponse(await self._view(tenant_id))

    async def mint_key(self, request: Request) -> Response:
        tenant_id = self._own(request)
        key = await self.registry.mint_key(self.mesh.storage, tenant_id)
        return ORJSONResponse({"api_key": key, "key_id": key_id_of(key)}, status_code=201)

    async def rotate_key(self, request: Request) -> Response:
        tenant_id = self._own(request)
        key, revoked = await self.registry.rotate(self.mesh.storage, tenant_id)
        return ORJSONResponse(
            {"api_key": key, "key_id": key_id_of(key), "revoked": revoked}, status_code=201
        )

    async def revoke_key(self, request: Request) -> Response:
        tenant_id = self._own(request)
        key_id = request.path_params["key_id"]
        revoked = await self.registry.revoke(self.mesh.storage, tenant_id, [key_id])
        return ORJSONResponse({"revoked": revoked})


def _text(data: dict[str, Any], name: str, default: str) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or len(value) > 256:
        raise ValidationError(f"invalid_{name}", f"{name} must be a string of at most 256 chars")
    return value


def _id(tenant: Any) -> str:
    return str(tenant.tenant_id)
