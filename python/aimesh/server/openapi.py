"""OpenAPI 3.1 description of the HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from aimesh import _native


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, **_json(_ref("Error"))}


_ERRORS = {
    "400": _err("Invalid input (machine-readable code in error.code)"),
    "413": _err("Body too large"),
}

_MESSAGE_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _ref("AIMessage")},
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
    },
}


def openapi_spec() -> dict[str, Any]:
    """The spec as a dict."""
    admin: list[dict[str, list[str]]] = [{"bearerAuth": []}, {}]
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
                "AIMessage": {
                    "type": "object",
                    "required": ["agent_id"],
                    "properties": {
                        "agent_id": {"type": "string", "pattern": "^[a-z0-9_-]+$", "minLength": 1},
                        "message_id": {"type": "string"},
                        "payload": {"type": "string", "description": "hex-encoded bytes"},
                        "payload_text": {"type": "string", "description": "UTF-8 payload"},
                        "estimated_cost_tokens": {"type": "integer", "minimum": 0},
                        "budget_tokens": {"type": "integer", "minimum": 1},
                        "deadline_ms": {"type": "integer", "description": "epoch ms"},
                        "task_graph_id": {"type": "string"},
                        "dependencies": {"type": "array", "items": {"type": "string"}},
                        "priority": {"type": "integer", "minimum": 0, "maximum": 100},
                        "dedup_context": {"type": "string"},
                        "trace_id": {"type": "string"},
                        "metadata": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "timestamp": {"type": "integer", "description": "epoch ns"},
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
                        "endpoint_id": {"type": "string"},
                        "capacity": {"type": "integer", "minimum": 1},
                        "current_load": {"type": "integer", "minimum": 0},
                        "cost_per_1k_tokens": {"type": "number", "minimum": 0},
                        "latency_p99_ms": {"type": "number", "minimum": 0},
                        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                        "health_status": {"type": "string"},
                        "url": {"type": "string"},
                        "kind": {"type": "string", "enum": ["openai", "http"]},
                        "group": {"type": "string"},
                        "model": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "region": {"type": "string"},
                        "api_key_env": {"type": "string"},
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
                        "agent_id": {"type": "string"},
                        "tokens": {"type": "integer", "minimum": 0},
                        "reset_at": {"type": "integer", "description": "epoch seconds"},
                        "period_s": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
        "paths": {
            "/messages": {
                "post": {
                    "summary": "Send one message (mode=async answers 202 once on disk)",
                    "parameters": [
                        {
                            "name": "mode",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["sync", "async"]},
                        }
                    ],
                    "requestBody": _MESSAGE_BODY,
                    "responses": {
                        "200": {"description": "Processed", **_json(_ref("Acknowledgment"))},
                        "202": {"description": "Received", **_json(_ref("Acknowledgment"))},
                        **_ERRORS,
                        "402": _err("Budget exceeded"),
                        "404": _err("Unknown route group"),
                        "409": _err("message_id reused with another body"),
                        "429": _err("Rate limited (Retry-After)"),
                        "503": _err("Queue full or no endpoint available"),
                    },
                }
            },
            "/messages/batch": {
                "post": {
                    "summary": "Send many messages; one acknowledgment each",
                    "requestBody": _json(
                        {
                            "type": "object",
                            "required": ["messages"],
                            "properties": {
                                "messages": {"type": "array", "items": _ref("AIMessage")}
                            },
                        }
                    ),
                    "responses": {
                        "200": {
                            "description": "Acknowledgments in order",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "acknowledgments": {
                                            "type": "array",
                                            "items": _ref("Acknowledgment"),
                                        }
                                    },
                                }
                            ),
                        },
                        **_ERRORS,
                    },
                }
            },
            "/messages/{message_id}": {
                "get": {
                    "summary": "Status and acknowledgment of one message",
                    "parameters": [_path("message_id")],
                    "responses": {"200": {"description": "Found"}, "404": _err("Unknown id")},
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
                "get": {"summary": "List endpoints", "responses": {"200": {"description": "OK"}}},
                "post": {
                    "summary": "Register or replace an endpoint (admin)",
                    "security": admin,
                    "requestBody": _json(_ref("EndpointMetrics")),
                    "responses": {
                        "200": {"description": "Replaced"},
                        "201": {"description": "Created"},
                        **_ERRORS,
                        "401": _err("Missing or bad admin key"),
                        "403": _err("Admin disabled on a public address"),
                    },
                },
            },
            "/endpoints/{endpoint_id}": {
                "get": {
                    "summary": "One endpoint with live figures",
                    "parameters": [_path("endpoint_id")],
                    "responses": {"200": {"description": "OK"}, "404": _err("Unknown endpoint")},
                },
                "delete": {
                    "summary": "Remove an endpoint (admin)",
                    "security": admin,
                    "parameters": [_path("endpoint_id")],
                    "responses": {
                        "204": {"description": "Removed"},
                        "401": _err("Missing or bad admin key"),
                        "403": _err("Admin disabled on a public address"),
                        "404": _err("Unknown endpoint"),
                    },
                },
            },
            "/budgets": {
                "post": {
                    "summary": "Set an agent's token budget (admin)",
                    "security": admin,
                    "requestBody": _json(_ref("BudgetRequest")),
                    "responses": {
                        "201": {"description": "Set", **_json(_ref("Budget"))},
                        **_ERRORS,
                        "401": _err("Missing or bad admin key"),
                        "403": _err("Admin disabled on a public address"),
                    },
                }
            },
            "/budgets/{agent_id}": {
                "get": {
                    "summary": "An agent's budget",
                    "parameters": [_path("agent_id")],
                    "responses": {
                        "200": {"description": "OK", **_json(_ref("Budget"))},
                        "404": _err("No budget"),
                    },
                }
            },
            "/budgets/{agent_id}/reset": {
                "post": {
                    "summary": "Reset an agent's budget (admin)",
                    "security": admin,
                    "parameters": [_path("agent_id")],
                    "responses": {
                        "200": {"description": "OK", **_json(_ref("Budget"))},
                        "404": _err("No budget"),
                    },
                }
            },
            "/stats": {
                "get": {
                    "summary": "Counts, tokens, cost, latency percentiles",
                    "responses": {"200": {"description": "OK"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text format",
                    "responses": {"200": {"description": "OK"}},
                }
            },
            "/health": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}
            },
            "/ready": {
                "get": {
                    "summary": "Readiness (storage reachable, started)",
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "Not ready"},
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This spec", "responses": {"200": {"description": "OK"}}}
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
                    "requestBody": {
                        "required": True,
                        **_json(
                            {
                                "type": "object",
                                "required": ["model", "messages"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "messages": {"type": "array", "minItems": 1},
                                    "stream": {"type": "boolean"},
                                    "max_tokens": {"type": "integer", "minimum": 1},
                                    "user": {"type": "string"},
                                },
                            }
                        ),
                    },
                    "responses": {
                        "200": {
                            "description": "The upstream's completion (JSON or event stream)",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        "400": {"description": "Invalid request"},
                        "402": {"description": "Budget exceeded"},
                        "404": {"description": "Unknown model (route group)"},
                        "429": {"description": "Rate limited (Retry-After)"},
                        "502": {"description": "Every endpoint of the chain failed"},
                    },
                }
            },
            "/dashboard/state": {
                "get": {
                    "summary": "Live snapshot for the dashboard page (/dashboard) — admin",
                    "security": admin,
                    "responses": {
                        "200": {"description": "OK"},
                        "401": _err("Missing or invalid admin key"),
                        "403": _err("Admin surface disabled on a public address without a key"),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "Route groups, as OpenAI models",
                    "security": [{"bearerAuth": []}, {}],
                    "responses": {"200": {"description": "OK"}},
                }
            },
        },
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
