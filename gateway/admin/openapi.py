"""The admin API's OpenAPI 3.1 document, generated from the route table (pure).

:func:`build_document` is the only source of the document the server serves at ``/api/openapi.json``; a test
checks that what the server serves equals it and that every route of the running application is in it, so
the document cannot drift from the code. Each operation carries ``x-roles`` (the roles that may call it, or
``["public"]``) besides the usual security requirement.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.admin.roles import ROLES
from gateway.admin.routes import ERROR, SECURITY_SERVER_API, ApiSpec, PathParams, Route
from gateway.admin.schema import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, JsonSchema

_ERROR_TEXT = {
    400: "bad request: a malformed field, identifier or query parameter",
    401: "not authenticated: missing, malformed, expired or revoked credentials",
    403: "authenticated, but none of the caller's roles may call this operation",
    404: "the object does not exist",
    409: "the object already exists, or is in a conflicting state",
    413: "the request body is larger than the admin API accepts",
    415: "the request body is not application/json",
    423: "the token is locked after too many wrong PINs",
    429: "the account is locked after too many wrong passwords",
    500: "a remote party (the central server) failed or cannot be reached",
}
_JSON = "application/json"


def _error_ref() -> dict[str, Any]:
    return {"content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _parameters(route: Route, path_params: PathParams) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in route.path_params:
        description, schema = path_params[name]
        params.append({"name": name, "in": "path", "required": True, "description": description, "schema": schema})
    for p in route.query:
        params.append({"name": p.name, "in": p.where, "required": p.required, "description": p.description,
                       "schema": p.schema})
    if route.paginated:
        params.append({"name": "limit", "in": "query", "required": False,
                       "description": f"page size (default {DEFAULT_LIMIT})",
                       "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}})
        params.append({"name": "offset", "in": "query", "required": False, "description": "items to skip",
                       "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}})
    return params


def _operation(route: Route, path_params: PathParams) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "x-roles": ["public"] if route.public else [r for r in ROLES if r in route.roles],
        "security": [] if route.public else [{"bearerAuth": []}, {"apiKeyAuth": []}],
    }
    params = _parameters(route, path_params)
    if params:
        op["parameters"] = params
    if route.request is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": route.request}}}
    ok: dict[str, Any] = {"description": "success"}
    if route.response is not None and route.status != 204:
        ok["content"] = {route.media_type: {"schema": route.response}}
    responses: dict[str, Any] = {str(route.status): ok}
    statuses = set(route.errors)
    if route.request is not None:
        statuses |= {400, 413, 415}
    if route.paginated or route.query or route.path_params:
        statuses.add(400)
    if not route.public:
        statuses |= {401, 403}
    for status in sorted(statuses):
        responses[str(status)] = {"description": _ERROR_TEXT[status], **_error_ref()}
    op["responses"] = responses
    return op


def build_document(api: ApiSpec = SECURITY_SERVER_API) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``api`` (default: the security server's)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in api.routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, api.path_params)
    error: JsonSchema = ERROR
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": api.title,
            "version": __version__,
            "description": api.description,
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": f"session token from POST {api.login_path} (ES256, short-lived)"},
                "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization",
                               "description": f"'X-Road-ApiKey token=<key>' with a key from POST {api.api_keys_path}"},
            },
            "schemas": {"Error": error},
        },
    }
