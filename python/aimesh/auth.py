"""Who may do what: the one key check behind the HTTP and QUIC adapters.

Until tenants exist there is one bearer key, the operator's admin key
(``AIMESH_ADMIN_KEY``). Without it, admin changes are allowed only when the
server listens on loopback; with it, every authenticated surface asks for it.
"""

from __future__ import annotations

import hmac

from aimesh.errors import AuthenticationError, PermissionDeniedError


class Authenticator:
    """Checks bearer keys in constant time; never logs or echoes them."""

    def __init__(self, admin_key: str = "", *, admin_open: bool = False) -> None:
        self._admin_key = admin_key.encode()
        # True only when bound to loopback without an admin key (local dev).
        self.admin_open = admin_open and not admin_key

    @property
    def keys_required(self) -> bool:
        return bool(self._admin_key)

    def require_admin(self, token: str | None) -> None:
        """Endpoint and budget changes: the admin key, or an open loopback."""
        if not self._admin_key:
            if self.admin_open:
                return
            raise PermissionDeniedError(
                "admin_key_required",
                "admin operations are disabled on a public address unless AIMESH_ADMIN_KEY is set",
            )
        self._check(token)

    def require_sender(self, token: str | None) -> None:
        """Sending messages over QUIC: open unless the server has a key."""
        if self._admin_key:
            self._check(token)

    def _check(self, token: str | None) -> None:
        if not token:
            raise AuthenticationError("missing_api_key", "Authorization: Bearer <key> required")
        if not hmac.compare_digest(token.encode(), self._admin_key):
            raise AuthenticationError("invalid_api_key", "the key is not valid")
