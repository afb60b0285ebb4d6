"""``aimesh tenants`` and the SDK's tenant calls against a real gateway
process with an admin key: keys are shown once, work at once, and are
refused at once after a rotation, a revocation or a disabled tenant."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from aimesh import (
    AiMeshClient,
    AsyncAiMeshClient,
    AuthenticationError,
    ConflictError,
    Message,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from tests.conftest import openai_endpoint
from tests.gateway import Gateway

ADMIN_KEY = "admin-secret-123"
KEY_RE = re.compile(r"amk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def gw(sims, gateways) -> Gateway:
    # Debug logging: the leak check below then sees everything the gateway says.
    return gateways(
        [openai_endpoint(sims(), "sim")],
        env={"AIMESH_ADMIN_KEY": ADMIN_KEY, "AIMESH_LOG_LEVEL": "debug"},
    )


def cli(
    gw: Gateway, *args: str, key: str | None = ADMIN_KEY, key_env: str = "AIMESH_ADMIN_KEY"
) -> subprocess.CompletedProcess[str]:
    """``aimesh ARGS --url GW`` with only ``key_env`` (if any) carrying a key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMESH_")}
    if key is not None:
        env[key_env] = key
    return subprocess.run(
        [sys.executable, "-m", "aimesh.cli", *args, "--url", gw.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def ok_json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def create(gw: Gateway, tenant_id: str, *extra: str) -> dict[str, Any]:
    out = cli(gw, "tenants", "create", tenant_id, *extra)
    body = ok_json(out)
    assert KEY_RE.fullmatch(body["api_key"]), body
    assert body["key_id"] == body["api_key"][4:16]
    assert "not shown again" in out.stderr
    assert body["key_id"] in out.stderr  # the note names the key, by id only
    assert body["api_key"] not in out.stderr
    return dict(body)


def send(gw: Gateway, key: str, agent: str = "agent") -> str:
    """The status of one new message sent with ``key`` (raises on an error)."""
    payload = f"hello {uuid.uuid4()}".encode()  # never a duplicate
    with AiMeshClient(gw.url, api_key=key, timeout=30) as client:
        return client.send_message(Message(agent_id=agent, payload=payload)).status.value


def refused(gw: Gateway, key: str) -> bool:
    """True if the gateway answers 401 invalid_api_key to ``key`` (SDK and raw HTTP)."""
    try:
        send(gw, key)
    except AuthenticationError as e:
        assert e.code == "invalid_api_key", e
        assert e.status == 401
    else:
        return False
    r = httpx.post(
        f"{gw.url}/messages",
        json={"agent_id": "agent", "payload_text": "x"},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_api_key"
    return True


def assert_log_clean(gw: Gateway, *keys: str) -> None:
    text = gw.log_text()
    assert ADMIN_KEY not in text
    for key in keys:
        assert key not in text
    assert not KEY_RE.search(text), KEY_RE.search(text)


def test_create_list_show_and_use_a_key(gw):
    body = create(gw, "acme", "--tier", "pro", "--name", "Acme Corp")
    key = body["api_key"]
    assert body["tenant_id"] == "acme" and body["tier"] == "pro" and body["name"] == "Acme Corp"
    assert body["disabled"] is False

    out = cli(gw, "tenants", "list")
    tenants = ok_json(out)
    assert [t["tenant_id"] for t in tenants] == ["acme"]
    assert tenants[0]["tier"] == "pro"
    assert "amk_" not in out.stdout

    out = cli(gw, "tenants", "show", "acme")
    shown = ok_json(out)
    assert shown["tier"] == "pro" and shown["tier_limits"]["name"] == "pro"
    assert [k["prefix"] for k in shown["keys"]] == [f"amk_{body['key_id']}"]
    assert shown["keys"][0]["revoked"] is False
    assert key not in out.stdout and not KEY_RE.search(out.stdout)
    assert "api_key" not in shown

    # The key works at once, with the SDK...
    assert send(gw, key, "acme-agent") == "success"
    # ...and for the CLI (the key in $AIMESH_API_KEY): its own tenant only.
    out = cli(gw, "tenants", "show", "acme", key=key, key_env="AIMESH_API_KEY")
    assert ok_json(out)["tenant_id"] == "acme"
    out = cli(gw, "tenants", "list", key=key, key_env="AIMESH_API_KEY")
    assert out.returncode == 1
    assert "error: admin_only:" in out.stderr
    # --api-key wins over the environment.
    out = cli(gw, "tenants", "list", "--api-key", key)
    assert out.returncode == 1 and "admin_only" in out.stderr
    assert_log_clean(gw, key)


def test_rotate_key_refuses_the_old_key_at_once(gw):
    old = create(gw, "rot")
    assert send(gw, old["api_key"]) == "success"
    out = cli(gw, "tenants", "rotate-key", "rot")
    rotated = ok_json(out)
    assert "not shown again" in out.stderr
    new = rotated["api_key"]
    assert KEY_RE.fullmatch(new) and new != old["api_key"]
    assert rotated["revoked"] == [old["key_id"]]
    assert refused(gw, old["api_key"])
    assert send(gw, new) == "success"
    keys = {k["key_id"]: k for k in ok_json(cli(gw, "tenants", "show", "rot"))["keys"]}
    assert keys[old["key_id"]]["revoked"] is True
    assert keys[old["key_id"]]["revoked_at_ms"] is not None
    assert keys[rotated["key_id"]]["revoked"] is False
    # A tenant may rotate its own key.
    out = cli(gw, "tenants", "rotate-key", "rot", "--api-key", new)
    newer = ok_json(out)["api_key"]
    assert refused(gw, new)
    assert send(gw, newer) == "success"
    assert_log_clean(gw, old["api_key"], new, newer)


def test_add_key_then_revoke_that_key(gw):
    first = create(gw, "multi")
    out = cli(gw, "tenants", "add-key", "multi")
    added = ok_json(out)
    assert set(added) == {"api_key", "key_id"}
    assert KEY_RE.fullmatch(added["api_key"])
    assert "not shown again" in out.stderr
    assert send(gw, first["api_key"]) == "success"
    assert send(gw, added["api_key"]) == "success"

    out = cli(gw, "tenants", "revoke", "multi", "--key-id", added["key_id"])
    assert ok_json(out) == {"revoked": [added["key_id"]]}
    assert refused(gw, added["api_key"])
    assert send(gw, first["api_key"]) == "success"
    # Revoking it again: no such active key.
    out = cli(gw, "tenants", "revoke", "multi", "--key-id", added["key_id"])
    assert out.returncode == 1 and "error: key_not_found:" in out.stderr
    # A tenant key may mint and revoke its own keys.
    out = cli(gw, "tenants", "add-key", "multi", "--api-key", first["api_key"])
    own = ok_json(out)
    out = cli(
        gw, "tenants", "revoke", "multi", "--key-id", own["key_id"], "--api-key", own["api_key"]
    )
    assert ok_json(out) == {"revoked": [own["key_id"]]}
    assert refused(gw, own["api_key"])
    shown = ok_json(cli(gw, "tenants", "show", "multi"))
    assert shown["disabled"] is False
    assert sorted(k["key_id"] for k in shown["keys"] if not k["revoked"]) == [first["key_id"]]
    assert_log_clean(gw, first["api_key"], added["api_key"], own["api_key"])


def test_set_tier_needs_the_admin_key(gw):
    body = create(gw, "tiered")
    assert body["tier"] == "free"
    shown = ok_json(cli(gw, "tenants", "set-tier", "tiered", "starter"))
    assert shown["tier"] == "starter" and shown["tier_limits"]["name"] == "starter"
    assert ok_json(cli(gw, "tenants", "show", "tiered"))["tier"] == "starter"

    # The tenant's own key may not raise its tier.
    out = cli(gw, "tenants", "set-tier", "tiered", "enterprise", "--api-key", body["api_key"])
    assert out.returncode != 0
    assert "error: admin_only:" in out.stderr
    assert out.stdout == ""
    with (
        AiMeshClient(gw.url, api_key=body["api_key"]) as client,
        pytest.raises(PermissionDeniedError) as e,
    ):
        client.update_tenant("tiered", tier="enterprise")
    assert e.value.status == 403 and e.value.code == "admin_only"
    assert ok_json(cli(gw, "tenants", "show", "tiered"))["tier"] == "starter"

    out = cli(gw, "tenants", "set-tier", "tiered", "platinum")
    assert out.returncode == 1 and "error: invalid_tier:" in out.stderr
    with AiMeshClient(gw.url, api_key=ADMIN_KEY) as client:
        view = client.update_tenant("tiered", name="Renamed")
        assert view["name"] == "Renamed" and view["tier"] == "starter"
        view = client.update_tenant("tiered", tier="pro", name="Both")
        assert (view["name"], view["tier"]) == ("Both", "pro")
    assert_log_clean(gw, body["api_key"])


def test_revoke_a_tenant_refuses_all_its_keys(gw):
    first = create(gw, "doomed")
    second = ok_json(cli(gw, "tenants", "add-key", "doomed"))
    other = create(gw, "bystander")
    assert send(gw, first["api_key"]) == "success"
    assert send(gw, second["api_key"]) == "success"

    out = cli(gw, "tenants", "revoke", "doomed")
    view = ok_json(out)
    assert view["tenant_id"] == "doomed" and view["disabled"] is True
    assert all(k["revoked"] for k in view["keys"]) and len(view["keys"]) == 2
    assert refused(gw, first["api_key"])
    assert refused(gw, second["api_key"])
    # Not even its own tenant view.
    out = cli(gw, "tenants", "show", "doomed", "--api-key", first["api_key"])
    assert out.returncode == 1 and "invalid_api_key" in out.stderr
    shown = ok_json(cli(gw, "tenants", "show", "doomed"))
    assert shown["disabled"] is True
    listed = {t["tenant_id"]: t for t in ok_json(cli(gw, "tenants", "list"))}
    assert listed["doomed"]["disabled"] is True and listed["bystander"]["disabled"] is False
    # A disabled tenant gets no new key; other tenants are untouched.
    out = cli(gw, "tenants", "add-key", "doomed")
    assert out.returncode == 1 and "error: tenant_disabled:" in out.stderr
    assert send(gw, other["api_key"]) == "success"
    assert_log_clean(gw, first["api_key"], second["api_key"], other["api_key"])


def test_errors_print_the_code_and_exit_non_zero(gw):
    out = cli(gw, "tenants", "create", "Bad Id")
    assert out.returncode == 1 and out.stdout == ""
    assert "error: invalid_tenant_id:" in out.stderr
    out = cli(gw, "tenants", "create", "ok-id", "--tier", "platinum")
    assert out.returncode == 1 and "error: invalid_tier:" in out.stderr
    assert "free" in out.stderr  # the message lists the tiers
    create(gw, "twice")
    out = cli(gw, "tenants", "create", "twice")
    assert out.returncode == 1 and "error: tenant_exists:" in out.stderr
    out = cli(gw, "tenants", "show", "nobody")
    assert out.returncode == 1 and "error: tenant_not_found:" in out.stderr
    out = cli(gw, "tenants", "list", key=None)
    assert out.returncode == 1 and "error: missing_api_key:" in out.stderr
    out = cli(gw, "tenants", "list", key="not-the-admin-key")
    assert out.returncode == 1 and "error: invalid_api_key:" in out.stderr
    assert "not-the-admin-key" not in out.stderr
    # Usage errors are argparse's (exit 2).
    out = cli(gw, "tenants", "set-tier", "twice")
    assert out.returncode == 2
    # Only "ok-id" failed on its tier: it was not created.
    assert [t["tenant_id"] for t in ok_json(cli(gw, "tenants", "list"))] == ["twice"]
    assert_log_clean(gw)


def test_sync_sdk_tenant_calls(gw):
    with AiMeshClient(gw.url, api_key=ADMIN_KEY) as admin:
        created = admin.create_tenant("sdk-sync", tier="starter", name="SDK")
        assert created["tier"] == "starter" and KEY_RE.fullmatch(created["api_key"])
        assert [t["tenant_id"] for t in admin.list_tenants()] == ["sdk-sync"]
        with pytest.raises(ConflictError) as c:
            admin.create_tenant("sdk-sync")
        assert c.value.code == "tenant_exists"
        with pytest.raises(ValidationError) as v:
            admin.create_tenant("Bad Id")
        assert v.value.code == "invalid_tenant_id"
        # Path segments are quoted: these ids reach the tenant lookup as written.
        for odd in ("no?such", "no#such", "no%2Fsuch"):
            with pytest.raises(NotFoundError) as nf:
                admin.get_tenant(odd)
            assert nf.value.code == "tenant_not_found", odd
        added = admin.create_key("sdk-sync")
        assert admin.revoke_key("sdk-sync", added["key_id"]) == {"revoked": [added["key_id"]]}
        with pytest.raises(NotFoundError) as nf:
            admin.revoke_key("sdk-sync", "000000000000")
        assert nf.value.code == "key_not_found"
        assert admin.disable_tenant("sdk-sync")["disabled"] is True
    with (
        AiMeshClient(gw.url, api_key=created["api_key"]) as tenant,
        pytest.raises(AuthenticationError),
    ):
        tenant.get_tenant("sdk-sync")
    assert_log_clean(gw, created["api_key"], added["api_key"])


async def test_async_sdk_tenant_calls(gw):
    async with AsyncAiMeshClient(gw.url, api_key=ADMIN_KEY) as admin:
        created = await admin.create_tenant("async-co", tier="pro", name="Async Co")
        key = created["api_key"]
        assert KEY_RE.fullmatch(key) and created["tier"] == "pro"
        view = await admin.get_tenant("async-co")
        assert view["name"] == "Async Co" and view["tier_limits"]["name"] == "pro"
        assert [k["key_id"] for k in view["keys"]] == [created["key_id"]]
        assert [t["tenant_id"] for t in await admin.list_tenants()] == ["async-co"]
        assert (await admin.update_tenant("async-co", tier="starter"))["tier"] == "starter"

    async with AsyncAiMeshClient(gw.url, api_key=key) as tenant:
        ack = await tenant.send_message(Message(agent_id="a1", payload=b"hi"))
        assert ack.status.value == "success"
        assert (await tenant.get_tenant("async-co"))["tenant_id"] == "async-co"
        rotated = await tenant.rotate_key("async-co")
        assert rotated["revoked"] == [created["key_id"]]
        # The connection's key is revoked: the next call on it is refused.
        with pytest.raises(AuthenticationError):
            await tenant.get_tenant("async-co")
    new = rotated["api_key"]
    async with AsyncAiMeshClient(gw.url, api_key=new) as tenant:
        ack = await tenant.send_message(Message(agent_id="a1", payload=b"again"))
        assert ack.status.value == "success"
        extra = await tenant.create_key("async-co")
        assert (await tenant.revoke_key("async-co", extra["key_id"]))["revoked"] == [
            extra["key_id"]
        ]
        with pytest.raises(PermissionDeniedError):
            await tenant.disable_tenant("async-co")
    async with AsyncAiMeshClient(gw.url, api_key=ADMIN_KEY) as admin:
        assert (await admin.disable_tenant("async-co"))["disabled"] is True
    assert refused(gw, new)
    assert_log_clean(gw, key, new, extra["api_key"])
