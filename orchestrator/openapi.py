"""The OpenAPI schema's shared parts: the one error body every endpoint answers with, the statuses each
operation can answer it with, and list envelopes. schemathesis checks responses against all of it
(tests/security/test_schemathesis.py)."""

from __future__ import annotations

from rest_framework import serializers

from orchestrator.errors import ERROR_CODES


def results_of(serializer_class: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    """``{"results": [...]}``, the envelope of the unpaginated lists."""
    return type(name, (serializers.Serializer,), {"results": serializer_class(many=True)})


ERROR_REF = {"$ref": "#/components/schemas/Error"}
DESCRIPTIONS = {
    "400": "The request is invalid; `details` names each field.",
    "401": "No valid credentials (API key, or callback token).",
    "404": "No such resource in this project.",
    "409": "Conflicts with the resource's current state.",
    "413": "The body is over the size limit.",
    "415": "The body is not JSON.",
    "429": "Over the project's rate limit; see `Retry-After`.",
}
CONFLICTS = {("post", "/v1/lifecycles"), ("post", "/v1/lifecycles/{lifecycle_id}/cancel"),
             ("post", "/v1/lifecycles/{lifecycle_id}/callback"), ("post", "/v1/jwt-issuers"),
             ("patch", "/v1/jwt-issuers/{issuer_id}"),
             ("post", "/v1/webhook-endpoints/{endpoint_id}/recover")}  # fmt: skip


# What serializers check but drf-spectacular cannot say: "exactly one of", list bounds, known params.
EXACTLY_ONE_OF = {"LifecycleCreate": ("prompt", "messages"), "TokenRequest": ("lifecycle_id", "user_id")}
PROPERTY_RULES = {
    ("LifecycleCreate", "messages"): {"minItems": 1, "maxItems": 1000},
    ("LifecycleCreate", "params"): {
        "properties": {
            "latency_ms": {"type": "number", "minimum": 0, "maximum": 600000, "description": "echo models only"},
            "stream": {"type": "boolean", "description": "stream the output to sockets as `generation.delta`"},
        },
    },
}


def add_request_rules(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: the request rules above, into the component schemas."""
    schemas = result.get("components", {}).get("schemas", {})
    for name, fields in EXACTLY_ONE_OF.items():
        if name in schemas:
            schemas[name]["oneOf"] = [{"required": [field]} for field in fields]
    for (name, field), rules in PROPERTY_RULES.items():
        if field in schemas.get(name, {}).get("properties", {}):
            schemas[name]["properties"][field].update(rules)
    # A body that must hold one of two fields cannot be left out.
    refs = {f"#/components/schemas/{name}" for name in EXACTLY_ONE_OF}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody", {})
            if any(media.get("schema", {}).get("$ref") in refs for media in body.get("content", {}).values()):
                body["required"] = True
    return result


# Bodies that name another resource, answered 404 when it is not in the project.
REFERENCES = {("post", "/v1/realtime/tokens")}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: document the error statuses of every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "enum": sorted(set(ERROR_CODES.values()))},
                    "message": {"type": "string"},
                    "details": {"nullable": True},
                },
            }
        },
    }
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/v1/") or path == "/v1/schema":
            continue
        for method, operation in operations.items():
            statuses = {"400", "401", "429"}
            if "{" in path:
                statuses.add("404")
            if method in ("post", "patch", "put"):
                statuses |= {"413", "415"}
            if (method, path) in CONFLICTS:
                statuses.add("409")
            if (method, path) in REFERENCES:
                statuses.add("404")
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(
                    status,
                    {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}},
                )
    return result
