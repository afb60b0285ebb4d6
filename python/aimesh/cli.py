"""The ``aimesh`` command line: run the server or the upstream simulator, and
talk to a running server (send, route, endpoints, budgets, tenants, stats)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from aimesh import logs
from aimesh.errors import AiMeshError

DEFAULT_URL = "http://127.0.0.1:9000"

EPILOG = """\
environment:
  AIMESH_CONFIG          TOML config file (endpoints, budgets, limits)
  AIMESH_BIND_ADDR       HTTP listen address (default 0.0.0.0:9000)
  AIMESH_DATA_DIR        SQLite data directory (default ./.aimesh-data)
  AIMESH_ADMIN_KEY       the operator's admin key: guards tenant, endpoint and budget
                         changes (client commands send it when $AIMESH_API_KEY is unset)
  AIMESH_API_KEY         bearer key for client commands (a tenant key amk_... or the admin key)
  AIMESH_RATE_LIMIT_RPS  per-agent requests per second (default 100)
  AIMESH_DEDUP_TTL       dedup window in seconds (default 3600)
  AIMESH_URL             server URL for client commands (default http://127.0.0.1:9000)

examples:
  aimesh serve                                  # with $AIMESH_CONFIG
  aimesh sim --port 8101 --latency-ms 20        # an OpenAI-compatible upstream simulator
  aimesh send --agent my-agent "Hello, AI!"
  aimesh endpoints add http://127.0.0.1:8101 --group gpt-4o --cost 2.5
  aimesh budgets set my-agent 100000
  aimesh tenants create acme --tier pro         # with $AIMESH_ADMIN_KEY; prints acme's key once
"""


def _api_key(args: argparse.Namespace) -> str | None:
    key = args.api_key or os.environ.get("AIMESH_API_KEY") or os.environ.get("AIMESH_ADMIN_KEY")
    return key or None


def _client(args: argparse.Namespace) -> Any:
    from aimesh.client import AiMeshClient

    return AiMeshClient(args.url, api_key=_api_key(args), timeout=args.timeout)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def cmd_serve(args: argparse.Namespace) -> int:
    from aimesh.config import AiMeshConfig
    from aimesh.server import serve

    env = dict(os.environ)
    if args.bind:
        env["AIMESH_BIND_ADDR"] = args.bind
    if args.data_dir:
        env["AIMESH_DATA_DIR"] = args.data_dir
    cfg = AiMeshConfig.load(args.config, env)
    serve(cfg)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from aimesh import sim

    sim.run(args)
    return 0


def _async_client(args: argparse.Namespace) -> Any:
    from aimesh.client import AsyncAiMeshClient

    return AsyncAiMeshClient(args.url, api_key=_api_key(args), timeout=args.timeout)


def cmd_send_file(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from rich.console import Console

    from aimesh.cli_load import read_prompts, run_load, stderr_console

    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 1
    defaults: dict[str, Any] = {"agent_id": args.agent, "priority": args.priority}
    if args.model:
        defaults["metadata"] = {"model": args.model}
    total = sum(1 for line in path.open("rb") if line.strip())
    results = open(args.out, "w") if args.out else None  # noqa: SIM115 (closed below)

    async def go() -> Any:
        async with _async_client(args) as client:
            return await run_load(
                client,
                read_prompts(path, defaults),
                total=total,
                concurrency=args.concurrency,
                mode="async" if args.async_mode else "sync",
                label=f"sending {path.name}",
                console=stderr_console(),
                results=results,
            )

    try:
        summary = asyncio.run(go())
    finally:
        if results is not None:
            results.close()
    Console().print(summary.table(f"aimesh send --file {path.name}"))
    return 0 if summary.ok else 1


def cmd_send(args: argparse.Namespace) -> int:
    from aimesh.models import AIMessage

    if args.file:
        return cmd_send_file(args)
    text = args.text if args.text is not None else sys.stdin.read()
    metadata = {"model": args.model} if args.model else {}
    msg = AIMessage(
        agent_id=args.agent,
        payload=text.encode(),
        priority=args.priority,
        metadata=metadata,
        estimated_cost_tokens=args.estimated_tokens,
        dedup_context=args.dedup_context or "",
    )
    with _client(args) as client:
        ack = client.send_message(msg, mode="async" if args.async_mode else "sync")
    out = ack.to_json_dict()
    if ack.result:
        out["result_text"] = ack.result_text
        del out["result"]
    _print(out)
    return 0 if ack.status.value in ("success", "received", "duplicate") else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from aimesh.cli_load import generated, run_load, stderr_console

    async def go() -> Any:
        async with _async_client(args) as client:
            return await run_load(
                client,
                generated(args.messages, args.agent, args.model, args.payload_bytes),
                total=args.messages,
                concurrency=args.concurrency,
                mode="async" if args.async_mode else "sync",
                label="bench",
                console=stderr_console(),
            )

    summary = asyncio.run(go())
    Console().print(
        summary.table(f"aimesh bench: {args.messages} messages, {args.concurrency} in flight")
    )
    return 0 if summary.ok else 1


def cmd_route(args: argparse.Namespace) -> int:
    from aimesh.models import AIMessage

    metadata = {"model": args.model} if args.model else {}
    msg = AIMessage(agent_id=args.agent, payload=(args.text or "x").encode(), metadata=metadata)
    with _client(args) as client:
        _print(client.route(msg))
    return 0


def cmd_endpoints(args: argparse.Namespace) -> int:
    from aimesh.models import EndpointMetrics

    with _client(args) as client:
        if args.action == "list":
            _print(client.list_endpoints())
        elif args.action == "add":
            ep = EndpointMetrics(
                endpoint_id=args.endpoint_id,
                url=args.endpoint_url or "",
                kind=args.kind,
                group=args.group or "",
                model=args.upstream_model or "",
                capacity=args.capacity,
                cost_per_1k_tokens=args.cost,
                latency_p99_ms=args.latency_p99_ms,
                api_key_env=args.api_key_env or "",
            )
            _print(client.register_endpoint(ep))
        elif args.action == "rm":
            client.remove_endpoint(args.endpoint_id)
            print(f"removed {args.endpoint_id}")
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "set":
            info = client.set_budget(args.agent_id, args.tokens, args.reset_at, args.period_s)
        elif args.action == "get":
            info = client.get_budget(args.agent_id)
        else:
            info = client.reset_budget(args.agent_id)
    _print(info.to_json_dict())
    return 0


KEY_NOTE = "note: store this key now: it is not shown again"


def cmd_tenants(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "create":
            out = client.create_tenant(args.tenant_id, args.tier, args.name)
        elif args.action == "list":
            out = client.list_tenants()
        elif args.action == "show":
            out = client.get_tenant(args.tenant_id)
        elif args.action == "set-tier":
            out = client.update_tenant(args.tenant_id, tier=args.tier)
        elif args.action == "add-key":
            out = client.create_key(args.tenant_id)
        elif args.action == "rotate-key":
            out = client.rotate_key(args.tenant_id)
        elif args.key_id:  # revoke one key
            out = client.revoke_key(args.tenant_id, args.key_id)
        else:  # revoke the whole tenant: disabled, every key refused at once
            out = client.disable_tenant(args.tenant_id)
    if isinstance(out, dict) and "api_key" in out:
        # The key first, where a person (or `jq .api_key`) finds it.
        out = {"api_key": out["api_key"], **{k: v for k, v in out.items() if k != "api_key"}}
        _print(out)
        print(f"{KEY_NOTE} (key id {out.get('key_id', '?')})", file=sys.stderr)
    else:
        _print(out)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.get_stats())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimesh",
        description="AiMesh: a message queue and gateway for AI agents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def client_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url", default=os.environ.get("AIMESH_URL", DEFAULT_URL), help="server URL"
        )
        p.add_argument(
            "--api-key",
            default=None,
            help="bearer key (default: $AIMESH_API_KEY, else $AIMESH_ADMIN_KEY)",
        )
        p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")

    p = sub.add_parser("serve", help="run the gateway (HTTP API)")
    p.add_argument("--config", help="TOML config (default: $AIMESH_CONFIG)")
    p.add_argument("--bind", help="host:port (default: $AIMESH_BIND_ADDR or 0.0.0.0:9000)")
    p.add_argument("--data-dir", help="data directory (default: $AIMESH_DATA_DIR)")
    p.set_defaults(fn=cmd_serve)

    from aimesh import sim

    p = sub.add_parser("sim", help="run an OpenAI-compatible upstream simulator (for tests/demos)")
    sim.add_arguments(p)
    p.set_defaults(fn=cmd_sim)

    p = sub.add_parser("send", help="send one message and print its acknowledgment")
    p.add_argument("text", nargs="?", help="payload text (default: read stdin)")
    p.add_argument("--agent", default="cli-agent", help="agent id (default cli-agent)")
    p.add_argument("--model", help="route group (metadata.model)")
    p.add_argument("--priority", type=int, default=50, help="0-100 (default 50)")
    p.add_argument("--estimated-tokens", type=int, default=None)
    p.add_argument("--dedup-context", default=None)
    p.add_argument("--async", dest="async_mode", action="store_true", help="answer once on disk")
    p.add_argument(
        "--file",
        help="JSON-lines file: one message per line (an AIMessage object, "
        '{"prompt": ...} or a string); shows progress, then a summary table',
    )
    p.add_argument("--concurrency", type=int, default=16, help="with --file: in flight (16)")
    p.add_argument("--out", help="with --file: write each acknowledgment to this JSON-lines file")
    client_opts(p)
    p.set_defaults(fn=cmd_send)

    p = sub.add_parser("bench", help="load a server with generated messages; summary table")
    p.add_argument("--messages", type=int, default=1000, help="how many (default 1000)")
    p.add_argument("--concurrency", type=int, default=32, help="in flight (default 32)")
    p.add_argument("--agent", default="bench-agent", help="agent id (default bench-agent)")
    p.add_argument("--model", help="route group (metadata.model)")
    p.add_argument("--payload-bytes", type=int, default=64, help="payload size (default 64)")
    p.add_argument("--async", dest="async_mode", action="store_true", help="async mode")
    client_opts(p)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("route", help="show where a message would be routed (dry run)")
    p.add_argument("text", nargs="?")
    p.add_argument("--agent", default="cli-agent")
    p.add_argument("--model", help="route group")
    client_opts(p)
    p.set_defaults(fn=cmd_route)

    p = sub.add_parser("endpoints", help="list, add or remove upstream endpoints")
    esub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = esub.add_parser("list", help="list endpoints with live figures")
    client_opts(e)
    e = esub.add_parser("add", help="register (or replace) an endpoint")
    e.add_argument("endpoint_id", help="id, or an http(s) URL used as both id and url")
    e.add_argument("--endpoint-url", help="upstream base URL (default: the id if it is a URL)")
    e.add_argument("--kind", default="openai", choices=["openai", "http"])
    e.add_argument("--group", help="route group, e.g. gpt-4o")
    e.add_argument("--upstream-model", help="model name sent upstream (default: the group)")
    e.add_argument("--capacity", type=int, default=100)
    e.add_argument("--cost", type=float, default=0.0, help="cost per 1k tokens")
    e.add_argument("--latency-p99-ms", type=float, default=0.0, help="prior P99 latency")
    e.add_argument("--api-key-env", help="env var holding the upstream API key")
    client_opts(e)
    e = esub.add_parser("rm", help="remove an endpoint")
    e.add_argument("endpoint_id")
    client_opts(e)
    p.set_defaults(fn=cmd_endpoints)

    p = sub.add_parser("budgets", help="set, get or reset an agent's token budget")
    bsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = bsub.add_parser("set", help="set a budget")
    b.add_argument("agent_id")
    b.add_argument("tokens", type=int)
    b.add_argument("--reset-at", type=int, default=None, help="epoch seconds of the next reset")
    b.add_argument("--period-s", type=int, default=None, help="reset period in seconds")
    client_opts(b)
    for name in ("get", "reset"):
        b = bsub.add_parser(name, help=f"{name} a budget")
        b.add_argument("agent_id")
        client_opts(b)
    p.set_defaults(fn=cmd_budgets)

    p = sub.add_parser(
        "tenants",
        help="create, list, show, re-tier tenants; mint, rotate or revoke their keys",
        description="Manage tenants and their API keys. Most actions need the admin key "
        "($AIMESH_ADMIN_KEY); show, add-key, rotate-key and revoke --key-id also accept "
        "the tenant's own key. A new key is printed once and never again.",
    )
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="create a tenant and print its first key (once)")
    t.add_argument("tenant_id", help="1-63 chars of [a-z0-9_-], starting with a letter or digit")
    t.add_argument("--tier", default="free", help="free, starter, pro, enterprise (default free)")
    t.add_argument("--name", default="", help="display name")
    client_opts(t)
    t = tsub.add_parser("list", help="list tenants")
    client_opts(t)
    t = tsub.add_parser("show", help="a tenant: tier limits, keys (by prefix), quota, usage")
    t.add_argument("tenant_id")
    client_opts(t)
    t = tsub.add_parser("set-tier", help="change a tenant's tier")
    t.add_argument("tenant_id")
    t.add_argument("tier")
    client_opts(t)
    t = tsub.add_parser("rotate-key", help="print a new key (once); every older key is revoked")
    t.add_argument("tenant_id")
    client_opts(t)
    t = tsub.add_parser("add-key", help="print an additional key (once); the others stay valid")
    t.add_argument("tenant_id")
    client_opts(t)
    t = tsub.add_parser(
        "revoke", help="revoke one key (--key-id), or disable the tenant and all its keys"
    )
    t.add_argument("tenant_id")
    t.add_argument(
        "--key-id", default=None, help="the key to revoke (default: disable the whole tenant)"
    )
    client_opts(t)
    p.set_defaults(fn=cmd_tenants)

    p = sub.add_parser("stats", help="counts, tokens, cost and latency percentiles")
    client_opts(p)
    p.set_defaults(fn=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aimesh`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The server logs JSON lines (for log pipelines); the other commands
    # talk to a person.
    fmt = os.environ.get("AIMESH_LOG_FORMAT") or ("json" if args.fn is cmd_serve else "text")
    logs.configure(json_lines=fmt == "json")
    # The SDK's HTTP client logs every request at INFO; a CLI user wants the
    # answer, not the transport chatter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code: int = args.fn(args)
        return code
    except AiMeshError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except httpx.TransportError as e:
        print(
            f"error: cannot reach the server at {getattr(args, 'url', '?')}: {e}", file=sys.stderr
        )
        return 1
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
