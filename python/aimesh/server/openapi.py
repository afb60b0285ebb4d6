"""OpenAPI 3.1 description of the HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aimesh import _native
from aimesh.models import (
    MAX_DEPENDENCIES,
    MAX_INT64,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_VALUE,
    MAX_PERIOD_S,
    MAX_STRING_FIELD,
    MAX_U32,
)
from aimesh.tenancy.tiers import BUILTIN_TIERS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body (every route that reads one refuses an
    empty body with 400 ``empty_body``)."""
    return {"required": True, **_json(schema)}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, **_json(_ref("Error"))}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null: optional fields may be sent as null (= absent)."""
    kind = schema["type"]
    return {**schema, "type": [kind, "null"] if isinstance(kind, str) else [*kind, "null"]}


def _int(minimum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": MAX_INT64}


def _text(max_length: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length}


def _texts(max_items: int) -> dict[str, Any]:
    return {"type": "array", "maxItems": max_items, "items": _text(MAX_STRING_FIELD)}


_AGENT_ID = {
    "type": "string",
    "pattern": "^[a-z0-9_-]+$",
    "minLength": 1,
    "maxLength": MAX_STRING_FIELD,
}
# bytes.fromhex: pairs of hex digits, ASCII whitespace allowed between pairs;
# at least one byte (an empty payload is refused with payload_required).
_HEX_WS = "[ \\t\\n\\x0b\\f\\r]*"
_HEX = f"^{_HEX_WS}[0-9A-Fa-f]{{2}}(?:{_HEX_WS}[0-9A-Fa-f]{{2}})*{_HEX_WS}$"


_ERRORS = {
    "400": _err("Invalid input (machine-readable code in error.code)"),
    "413": _err("Body too large"),
}

PROTOBUF = "application/x-protobuf"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_MODE = {
    "name": "mode",
    "in": "query",
    "schema": {"type": "string", "enum": ["sync", "async"]},
}

_MESSAGE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _ref("AIMessage")},
        PROTOBUF: {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "AIMessage of proto/aimesh.proto",
            }
        },
    },
}


def openapi_spec(tiers: Sequence[str] = tuple(BUILTIN_TIERS)) -> dict[str, Any]:
    """The spec as a dict (``tiers``: the tier names this server knows)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AiMesh",
            "version": _native.__version__,
            "description": "Message queue and gateway for AI agents.",
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                                "retry_after": {"type": "number"},
                            },
                        }
                    },
                },
                "OpenAIError": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "code": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
                "AIMessage": {
                    "type": "object",
                    "required": ["agent_id"],
                    # A non-null `payload` wins; else a non-null `payload_text`.
                    "anyOf": [
                        {"required": ["payload"], "properties": {"payload": {"type": "string"}}},
                        {
                            "required": ["payload_text"],
                            "properties": {
                                "payload": {"type": "null"},
                                "payload_text": {"type": "string", "minLength": 1},
                            },
                        },
                    ],
                    "properties": {
                        "agent_id": _AGENT_ID,
                        "message_id": _opt(_text(MAX_STRING_FIELD)),
                        "payload": _opt(
                            {"type": "string", "pattern": _HEX, "description": "hex-encoded bytes"}
                        ),
                        "payload_text": _opt(
                            {"type": "string", "description": "UTF-8 payload (without `payload`)"}
                        ),
                        "estimated_cost_tokens": _opt(_int(0)),
                        "budget_tokens": _opt(_int(1)),
                        "deadline_ms": _opt({**_int(1), "description": "epoch ms, in the future"}),
                        "task_graph_id": _opt(_text(MAX_STRING_FIELD)),
                        "dependencies": _opt(_texts(MAX_DEPENDENCIES)),
                        "priority": _opt({"type": "integer", "minimum": 0, "maximum": 100}),
                        "dedup_context": _opt(_text(4096)),
                        "trace_id": _opt(_text(MAX_STRING_FIELD)),
                        "metadata": _opt(
                            {
                                "type": "object",
                                "maxProperties": MAX_METADATA_ENTRIES,
                                "propertyNames": {"maxLength": MAX_STRING_FIELD},
                                "additionalProperties": _text(MAX_METADATA_VALUE),
                            }
                        ),
                        "timestamp": _opt({**_int(0), "description": "epoch ns"}),
                    },
                },
                "Acknowledgment": {
                    "type": "object",
                    "required": ["original_message_id", "status"],
                    "properties": {
                        "original_message_id": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": ["received", "success", "failed", "duplicate", "rejected"],
                        },
                        "tokens_used": {"type": "integer"},
                        "processing_latency_ms": {"type": "number"},
                        "endpoint_id": {"type": "string"},
                        "error": {"type": ["string", "null"]},
                        "error_code": {"type": "string"},
                        "result": {"type": ["string", "null"], "description": "hex"},
                        "retry_after": {"type": "number"},
                        "trace_id": {"type": "string"},
                    },
                },
                "RoutingScore": {
                    "type": "object",
                    "properties": {
                        k: {"type": "number"}
                        for k in ("cost_score", "load_score", "latency_score", "total_score")
                    },
                },
                "RoutingDecision": {
                    "type": "object",
                    "properties": {
                        "message_id": {"type": "string"},
                        "target_endpoint": {"type": "string"},
                        "score_breakdown": _ref("RoutingScore"),
                        "fallback_endpoints": {"type": "array", "items": {"type": "string"}},
                        "fallback_scores": {"type": "array", "items": _ref("RoutingScore")},
                        "reason": {"type": "string"},
                        "group": {"type": ["string", "null"]},
                        "candidates": {"type": "integer"},
                    },
                },
                "EndpointMetrics": {
                    "type": "object",
                    "required": ["endpoint_id"],
                    "properties": {
                        "endpoint_id": {"type": "string", "minLength": 1, "maxLength": 2048},
                        "capacity": _opt({"type": "integer", "minimum": 1, "maximum": MAX_U32}),
                        "current_load": _opt({"type": "integer", "minimum": 0, "maximum": MAX_U32}),
                        "cost_per_1k_tokens": _opt({"type": "number", "minimum": 0}),
                        "latency_p99_ms": _opt({"type": "number", "minimum": 0}),
                        "error_rate": _opt({"type": "number", "minimum": 0, "maximum": 1}),
                        "health_status": {
                            "type": "string",
                            "enum": ["healthy", "degraded", "unhealthy"],
                        },
                        "url": _opt(
                            {
                                "type": "string",
                                "maxLength": 2048,
                                "pattern": "^(?:https?://[\\s\\S]*)?$",
                                "description": "empty: endpoint_id when it is an http(s) URL",
                            }
                        ),
                        "kind": {"type": ["string", "null"], "enum": ["openai", "http", None]},
                        "group": _opt(_text(MAX_STRING_FIELD)),
                        "model": _opt(_text(MAX_STRING_FIELD)),
                        "tags": _opt(_texts(32)),
                        "region": _opt(_text(MAX_STRING_FIELD)),
                        "api_key_env": _opt(_text(MAX_STRING_FIELD)),
                    },
                },
                "Budget": {
                    "type": "object",
                    "properties": {
                        "agent_id": {"type": "string"},
                        "initial_tokens": {"type": "integer"},
                        "remaining_tokens": {"type": "integer"},
                        "reserved_tokens": {"type": "integer"},
                        "consumption_rate": {"type": "number"},
                        "reset_at": {"type": ["integer", "null"]},
                    },
                },
                "BudgetRequest": {
                    "type": "object",
                    "required": ["agent_id", "tokens"],
                    "properties": {
                        "agent_id": _AGENT_ID,
                        "tokens": _int(0),
                        "reset_at": _opt({**_int(0), "description": "epoch seconds"}),
                        "period_s": _opt(
                            {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_PERIOD_S,
                                "description": "seconds; 0 or absent: reset once",
                            }
                        ),
                    },
                },
            },
        },
        "paths": _paths(sorted(tiers)),
    }


def _ack(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A 2xx answer in JSON, or protobuf when the request asked for it
    (``Accept: application/x-protobuf``, or a protobuf body without a JSON
    ``Accept``)."""
    return {
        "description": description,
        "content": {
            "application/json": {"schema": schema},
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        },
    }


def _paths(tiers: list[str]) -> dict[str, Any]:
    admin: list[dict[str, list[str]]] = [{"bearerAuth": []}, {}]
    admin_errors = {
        "401": _err("Missing or bad admin key"),
        "403": _err("Admin disabled on a public address"),
    }
    openai_error = {"description": "", **_json(_ref("OpenAIError"))}
    return {
        "/messages": {
            "post": {
                "summary": "Send one message (mode=async answers 202 once on disk)",
                "parameters": [_MODE],
                "requestBody": _MESSAGE_BODY,
                "responses": {
                    "200": _ack("Processed", _ref("Acknowledgment")),
                    "202": _ack("Received", _ref("Acknowledgment")),
                    **_ERRORS,
                    "402": _err("Budget exceeded"),
                    "404": _err("Unknown route group"),
                    "409": _err("message_id reused with another body"),
                    "429": _err("Rate limited (Retry-After)"),
                    "503": _err("Queue full, no endpoint available or storage unavailable"),
                },
            }
        },
        "/messages/batch": {
            "post": {
                "summary": "Send many messages; one acknowledgment each",
                "parameters": [_MODE],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["messages"],
                                "properties": {
                                    "messages": {
                                        "type": "array",
                                        "maxItems": 1000,
                                        "items": _ref("AIMessage"),
                                    }
                                },
                            }
                        },
                        PROTOBUF: {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": "MessageBatch of proto/aimesh.proto",
                            }
                        },
                    },
                },
                "responses": {
                    "200": _ack(
                        "Acknowledgments in order (refused messages are `rejected`)",
                        {
                            "type": "object",
                            "required": ["acknowledgments"],
                            "properties": {
                                "acknowledgments": {
                                    "type": "array",
                                    "items": _ref("Acknowledgment"),
                                }
                            },
                        },
                    ),
                    **_ERRORS,
                    "503": _err("Storage unavailable or draining"),
                },
            }
        },
        "/messages/{message_id}": {
            "get": {
                "summary": "Status and acknowledgment of one message",
                "parameters": [_path("message_id")],
                "responses": {
                    "200": {"description": "Found", **_json({"type": "object"})},
                    "404": _err("Unknown id"),
                },
            }
        },
        "/route": {
            "post": {
                "summary": "Dry run: where would this message go",
                "requestBody": _MESSAGE_BODY,
                "responses": {
                    "200": {"description": "Decision", **_json(_ref("RoutingDecision"))},
                    **_ERRORS,
                    "404": _err("Unknown route group"),
                    "503": _err("No endpoint available"),
                },
            }
        },
        "/endpoints": {
            "get": {
                "summary": "List endpoints",
                "responses": {
                    "200": {
                        "description": "OK",
                        **_json(
                            {
                                "type": "object",
                                "required": ["endpoints"],
                                "properties": {
                                    "endpoints": {"type": "array", "items": {"type": "object"}}
                                },
                            }
                        ),
                    }
                },
            },
            "post": {
                "summary": "Register or replace an endpoint (admin)",
                "security": admin,
                "requestBody": _body(_ref("EndpointMetrics")),
                "responses": {
                    "200": {"description": "Replaced", **_json({"type": "object"})},
                    "201": {"description": "Created", **_json({"type": "object"})},
                    **_ERRORS,
                    **admin_errors,
                },
            },
        },
        "/endpoints/{endpoint_id}": {
            "get": {
                "summary": "One endpoint with live figures",
                "parameters": [_path("endpoint_id")],
                "responses": {
                    "200": {"description": "OK", **_json({"type": "object"})},
                    "404": _err("Unknown endpoint"),
                },
            },
            "delete": {
                "summary": "Remove an endpoint (admin)",
                "security": admin,
                "parameters": [_path("endpoint_id")],
                "responses": {
                    "204": {"description": "Removed"},
                    **admin_errors,
                    "404": _err("Unknown endpoint"),
                },
            },
        },
        "/budgets": {
            "post": {
                "summary": "Set an agent's token budget (admin)",
                "security": admin,
                "requestBody": _body(_ref("BudgetRequest")),
                "responses": {
                    "201": {"description": "Set", **_json(_ref("Budget"))},
                    **_ERRORS,
                    **admin_errors,
                },
            }
        },
        "/budgets/{agent_id}": {
            "get": {
                "summary": "An agent's budget",
                "parameters": [_agent_path()],
                "responses": {
                    "200": {"description": "OK", **_json(_ref("Budget"))},
                    "400": _err("Invalid agent id"),
                    "404": _err("No budget"),
                },
            }
        },
        "/budgets/{agent_id}/reset": {
            "post": {
                "summary": "Reset an agent's budget (admin)",
                "security": admin,
                "parameters": [_agent_path()],
                "responses": {
                    "200": {"description": "OK", **_json(_ref("Budget"))},
                    "400": _err("Invalid agent id"),
                    **admin_errors,
                    "404": _err("No budget"),
                },
            }
        },
        "/stats": {
            "get": {
                "summary": "Counts, tokens, cost, latency percentiles",
                "responses": {"200": {"description": "OK", **_json({"type": "object"})}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text format",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {METRICS_TYPE: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "OK",
                        **_json(
                            {
                                "type": "object",
                                "required": ["status", "version"],
                                "properties": {
                                    "status": {"const": "ok"},
                                    "version": {"type": "string"},
                                },
                            }
                        ),
                    }
                },
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness (storage reachable, started)",
                "responses": {
                    "200": {"description": "Ready", **_json({"type": "object"})},
                    "503": {"description": "Not ready", **_json({"type": "object"})},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This spec",
                "responses": {"200": {"description": "OK", **_json({"type": "object"})}},
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI-compatible chat completion; `model` names a route group",
                "description": (
                    "The body is an OpenAI chat-completions request. Agent: header "
                    "`X-AiMesh-Agent`, else `user`, else `default`. With `stream: true` the "
                    "answer is Server-Sent Events. Errors use OpenAI's shape with AiMesh's "
                    "code in `error.code`."
                ),
                "security": [{"bearerAuth": []}, {}],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["model", "messages"],
                        "properties": {
                            "model": {"type": "string", "minLength": 1},
                            "messages": {"type": "array", "minItems": 1},
                            "stream": {"type": "boolean"},
                            "max_tokens": _opt(_int(1)),
                            "max_completion_tokens": _opt(_int(1)),
                            "user": {"type": "string"},
                        },
                    }
                ),
                "responses": {
                    "200": {
                        "description": "The upstream's completion (JSON or event stream)",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **{
                        code: {**openai_error, "description": text}
                        for code, text in (
                            ("400", "Invalid request"),
                            ("401", "Missing or bad key (with AIMESH_ADMIN_KEY set)"),
                            ("402", "Budget exceeded"),
                            ("404", "Unknown model (route group)"),
                            ("409", "Dedup context reused with another body"),
                            ("413", "Body too large"),
                            ("429", "Rate limited (Retry-After)"),
                            ("502", "Every endpoint of the chain failed"),
                            ("503", "Queue full, no endpoint available or storage unavailable"),
                            ("504", "The upstream timed out"),
                        )
                    },
                },
            }
        },
        **_tenant_paths(admin, admin_errors, tiers),
        "/dashboard/state": {
            "get": {
                "summary": "Live snapshot for the dashboard page (/dashboard) — admin",
                "security": [{"bearerAuth": []}, {}],
                "responses": {
                    "200": {"description": "OK", **_json({"type": "object"})},
                    "401": _err("Missing or invalid admin key"),
                    "403": _err("Admin surface disabled on a public address without a key"),
                },
            }
        },
        "/v1/models": {
            "get": {
                "summary": "Route groups, as OpenAI models",
                "security": [{"bearerAuth": []}, {}],
                "responses": {
                    "200": {
                        "description": "OK",
                        **_json(
                            {
                                "type": "object",
                                "required": ["object", "data"],
                                "properties": {
                                    "object": {"const": "list"},
                                    "data": {"type": "array", "items": {"type": "object"}},
                                },
                            }
                        ),
                    },
                    "401": {
                        **openai_error,
                        "description": "Missing or bad key (with AIMESH_ADMIN_KEY set)",
                    },
                },
            }
        },
    }


_TENANT_ID = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}


def _tenant_paths(
    admin: list[dict[str, list[str]]], admin_errors: dict[str, Any], tiers: list[str]
) -> dict[str, Any]:
    """``/tenants``: the admin manages tenants; a tenant key reads its own
    tenant and manages its own keys (another tenant is a 404 to it)."""
    tenant = {"type": "object", "required": ["tenant_id", "tier"]}
    new_key = {
        "type": "object",
        "required": ["api_key", "key_id"],
        "properties": {"api_key": {"type": "string"}, "key_id": {"type": "string"}},
    }
    own = [_path("tenant_id")]
    unknown = {"404": _err("No such tenant (or not the caller's)")}
    return {
        "/tenants": {
            "post": {
                "summary": "Create a tenant and its first API key, shown once (admin)",
                "security": admin,
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["tenant_id"],
                        "properties": {
                            "tenant_id": _TENANT_ID,
                            "tier": {"type": "string", "enum": tiers},
                            "name": {"type": "string", "maxLength": 256},
                        },
                    }
                ),
                "responses": {
                    "201": {
                        "description": "Created; `api_key` is shown only here",
                        **_json(tenant),
                    },
                    **_ERRORS,
                    **admin_errors,
                    "409": _err("The tenant exists"),
                },
            },
            "get": {
                "summary": "Every tenant (admin)",
                "security": admin,
                "responses": {
                    "200": {"description": "OK", **_json({"type": "object"})},
                    **admin_errors,
                },
            },
        },
        "/tenants/{tenant_id}": {
            "get": {
                "summary": "A tenant: tier, limits, keys (prefixes only), quota and usage",
                "security": admin,
                "parameters": own,
                "responses": {
                    "200": {"description": "OK", **_json(tenant)},
                    "401": _err("Missing or bad key"),
                    **unknown,
                },
            },
            "patch": {
                "summary": "Change a tenant's tier or name (admin)",
                "security": admin,
                "parameters": own,
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "tier": {"type": "string", "enum": tiers},
                            "name": {"type": "string", "maxLength": 256},
                        },
                    }
                ),
                "responses": {
                    "200": {"description": "OK", **_json(tenant)},
                    **_ERRORS,
                    **admin_errors,
                    **unknown,
                },
            },
            "delete": {
                "summary": "Disable a tenant: every key refused at once, data kept (admin)",
                "security": admin,
                "parameters": own,
                "responses": {
                    "200": {"description": "Disabled", **_json(tenant)},
                    **admin_errors,
                    **unknown,
                },
            },
        },
        "/tenants/{tenant_id}/keys": {
            "post": {
                "summary": "Another API key for the tenant, shown once (admin or the tenant)",
                "security": admin,
                "parameters": own,
                "responses": {
                    "201": {"description": "Created", **_json(new_key)},
                    "401": _err("Missing or bad key"),
                    **unknown,
                    "409": _err("Tenant disabled or too many keys"),
                },
            },
        },
        "/tenants/{tenant_id}/rotate-key": {
            "post": {
                "summary": "A new key; every older key of the tenant is revoked at once",
                "security": admin,
                "parameters": own,
                "responses": {
                    "201": {"description": "Rotated", **_json(new_key)},
                    "401": _err("Missing or bad key"),
                    **unknown,
                    "409": _err("Tenant disabled"),
                },
            },
        },
        "/tenants/{tenant_id}/keys/{key_id}": {
            "delete": {
                "summary": "Revoke one key, at once (admin or the tenant)",
                "security": admin,
                "parameters": [*own, _path("key_id")],
                "responses": {
                    "200": {"description": "Revoked", **_json({"type": "object"})},
                    "401": _err("Missing or bad key"),
                    "404": _err("No such tenant or active key"),
                },
            },
        },
    }


def _agent_path() -> dict[str, Any]:
    return {"name": "agent_id", "in": "path", "required": True, "schema": _AGENT_ID}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
