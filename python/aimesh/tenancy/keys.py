"""API keys: ``amk_<key_id>_<secret>``.

The 12-hex-digit ``key_id`` identifies a key (it is shown in listings and
logs); the secret is 32 random bytes. Only the SHA-256 of the whole key is
stored: a 256-bit random secret needs no slow hash, and the comparison is
constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

PREFIX = "amk_"
_KEY_RE = re.compile(r"^amk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


def generate_key() -> tuple[str, str]:
    """A new ``(key_id, key)``; the key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return key_id, f"{PREFIX}{key_id}_{secret}"


def key_hash(key: str) -> str:
    """What is stored of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(token: str) -> str | None:
    """The key id of a well-formed tenant key, else None."""
    m = _KEY_RE.match(token)
    return m.group(1) if m else None


def matches(token: str, stored_hash: str) -> bool:
    """Constant-time check of a presented key against a stored hash."""
    return hmac.compare_digest(key_hash(token).encode(), stored_hash.encode())
