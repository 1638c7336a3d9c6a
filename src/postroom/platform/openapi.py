"""The OpenAPI 3.1 document of every endpoint Postroom serves, and GET /api/openapi.json.

Each capability writes its part next to its endpoints (`<capability>/openapi.py`: an `Op` per
endpoint, the path items of its public routes, its component schemas) and hands it over in its
manifest (platform.capability). This module holds the schema helpers they write with, the error
responses every endpoint shares, and the assembler that walks the manifests. The document is
built once, on first use, and served as the same bytes on every call. Methods, authentication and
the errors every endpoint shares (401, 403, 400 for workspace_id and bodies, 413, 503) are derived
from the registered Endpoint objects. 500 is documented nowhere: a 5xx other than 503 is a bug.

The test suite holds the document to the code: tests/platform/test_openapi.py validates it and compares
its operations with the registered endpoints, tests/conftest.py checks every request and
response the tests make against it, and tests/cross/test_fuzz.py runs Schemathesis on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata

from starlette.responses import Response

from postroom.platform import jsonenc
from postroom.platform.capability import Capability
from postroom.platform.config import DEFAULT_MAX_BODY
from postroom.platform.http import WORKSPACE_ID, Call, Endpoint

PATH = "/api/openapi.json"


# ---------------------------------------------------------------- schema helpers

def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict, required=(), *, closed: bool = True, description: str | None = None) -> dict:
    """An object schema. Responses are closed (an undocumented key is drift); requests stay open,
    since the server ignores unknown keys."""
    out: dict = {"type": "object"}
    if description:
        out["description"] = description
    if required:
        out["required"] = list(required)
    out["properties"] = properties
    if closed:
        out["additionalProperties"] = False
    return out


def array(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
INTEGER = {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}
TRUE = {"const": True}
ANY_JSON: dict = {}
WORKSPACE_ID_SCHEMA = {"type": "string", "pattern": WORKSPACE_ID.pattern,
                       "description": "1-32 characters of a-z, 0-9, _ and -"}
PAGE_CURSOR = {"type": "string", "description": "present when another page follows"}


def json_content(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def param(name: str, schema: dict, required: bool = False, description: str | None = None, **extra) -> dict:
    """A query parameter."""
    out = {"name": name, "in": "query", "required": required, "schema": schema, **extra}
    if description:
        out["description"] = description
    return out


def limit_param(default: int, maximum: int) -> dict:
    return param("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default})


CURSOR_PARAM = param("cursor", STRING, description="the previous page's next_cursor")
EMAIL_PARAM = param("email", STRING, True, "normalised (trimmed, lower-cased) before the lookup")


# ---------------------------------------------------------------- error responses

ERRORS = {
    400: ("BadRequest", "The request is invalid; the message names the field or value."),
    401: ("Unauthorized", "Missing, malformed, expired or revoked token."),
    403: ("Forbidden", "Not a member of the workspace (also for a workspace that does not exist), "
                       "or the key lacks the permission."),
    404: ("NotFound", "The named resource does not exist in this workspace."),
    405: ("MethodNotAllowed", "A method the path does not serve (any operation's other methods): "
                              "{\"error\": \"Method not allowed\"} with Allow."),
    409: ("Conflict", "The resource already exists."),
    413: ("PayloadTooLarge", "The request body is over the configured limit (POSTROOM_MAX_BODY_BYTES, "
                             f"default {DEFAULT_MAX_BODY // (1024 * 1024)} MiB)."),
    503: ("ServiceUnavailable", "The database is unavailable: {\"error\": \"database unavailable\"}; retry."),
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def error_response(description: str, headers: dict | None = None) -> dict:
    """An error answer with its own text (a 429 is declared by the operation that can give it)."""
    response: dict = {"description": description, "content": {"application/json": {"schema": ref("Error")}}}
    if headers:
        response["headers"] = headers
    return response


def _shared_responses() -> dict:
    out = {}
    for status, (name, description) in ERRORS.items():
        headers = None
        if status == 503:
            headers = RETRY_AFTER
        elif status == 405:
            headers = {"Allow": {"description": "the method the path serves", "required": True, "schema": STRING}}
        out[name] = error_response(description, headers)
    return out


def error_refs(statuses) -> dict:
    return {str(s): {"$ref": f"#/components/responses/{ERRORS[s][0]}"} for s in sorted(statuses)}


# ---------------------------------------------------------------- one operation of /api/*

class Op:
    """What the Endpoint does not say about one operation. `id` is its operationId: Notifuse's for
    the operations of its public document (a client generated from either document gets the same
    method names), ours in the same style for the rest. `responses` are answers with their own
    text, by status (a 429 with its limits)."""

    def __init__(self, summary: str, *, id: str, tag: str, ok: dict, params=(), body: dict | None = None,
                 required=(), status: int = 200, errors=(), description: str | None = None,
                 responses: dict[int, dict] | None = None):
        self.summary, self.id, self.tag, self.ok, self.params = summary, id, tag, ok, list(params)
        self.body, self.required, self.status = body, list(required), status
        self.errors, self.description = set(errors), description
        self.responses = dict(responses or {})


def _operation(endpoint: Endpoint, op: Op) -> dict:
    errors = set(op.errors)
    if endpoint.path != PATH:
        errors.add(503)  # every other endpoint reads the database (tokens of users included)
    if endpoint.auth != "none":
        errors.add(401)
    if endpoint.auth == "workspace":
        errors |= {400, 403}
    if endpoint.method == "POST":
        errors |= {400, 413}
    if op.params and any(p.get("required") for p in op.params):
        errors.add(400)
    out: dict = {"summary": op.summary, "tags": [op.tag], "operationId": op.id}
    if op.description:
        out["description"] = op.description
    if endpoint.auth == "none":
        out["security"] = []
    elif endpoint.auth == "workspace" and endpoint.resource:
        out["description"] = (out.get("description", "") + f" Permission: {endpoint.resource} "
                              f"{'write' if endpoint.write else 'read'}.").strip()
    workspace = endpoint.auth == "workspace"
    if endpoint.method == "GET":
        params = list(op.params)
        if workspace:
            params.insert(0, param(endpoint.workspace_param, ref("WorkspaceId"), True))
        if params:
            out["parameters"] = params
    else:
        props = dict(op.body or {})
        required = list(op.required)
        if workspace:
            props = {endpoint.workspace_param: ref("WorkspaceId"), **props}
            required.insert(0, endpoint.workspace_param)
        out["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": obj(props, required, closed=False)}}}
    out["responses"] = {str(op.status): json_content(op.ok), **error_refs(errors),
                        **{str(s): r for s, r in sorted(op.responses.items())}}
    return out


# ---------------------------------------------------------------- assembling the document

_DESCRIPTION = """\
Postroom's HTTP API, compatible with Notifuse's: RPC-style paths `/api/<resource>.<verb>`, reads are
GET with query parameters, writes are POST with a JSON body, and every call names its `workspace_id`.

- Auth: `Authorization: Bearer <token>`, an HS256 JWT (an API key, or a user session from
  user.rootSignin). Authentication is checked before the method.
- Every error is JSON `{"error": "<message>"}` on every status. A method an operation does not list
  gets 405 `Method not allowed` (401 first when a token is required and missing); an unknown
  `/api/...` path gets 404 `not found`.
- OPTIONS on any path answers 200 with an empty body and the CORS headers.
- JSON is compact; times are RFC 3339 in UTC with `Z`; a whole number has no fraction.
- Query parameters given empty count as absent.
"""

# The shapes every capability's operations use.
SCHEMAS = {
    "Error": obj({"error": {"type": "string", "description": "what was wrong, naming the field or value"}},
                 ["error"], description="The body of every error, on every status."),
    "WorkspaceId": WORKSPACE_ID_SCHEMA,
    "Success": obj({"success": TRUE}, ["success"]),
}


def build(capabilities: Sequence[Capability]) -> dict:
    """The document of the manifests' endpoints (those with an Op; tests/platform/test_openapi.py names
    every registered endpoint left out), route path items and schemas, in manifest order."""
    paths: dict = {}
    schemas = dict(SCHEMAS)
    for capability in capabilities:
        for endpoint in capability.endpoints:
            op = capability.operations.get(endpoint.path)
            if op is not None:
                paths[endpoint.path] = {endpoint.method.lower(): _operation(endpoint, op)}
        schemas.update(capability.schemas)
    for capability in capabilities:  # paths outside /api follow the API's
        paths.update(capability.paths)
    try:
        version = metadata.version("postroom")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "0.0.0"
    tags = []
    for item in paths.values():
        for operation in item.values():
            for tag in operation["tags"]:
                if tag not in tags:
                    tags.append(tag)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Postroom API", "version": version, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"BearerAuth": []}],
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "MetricsToken": {"type": "http", "scheme": "bearer",
                                 "description": "the value of POSTROOM_METRICS_TOKEN"},
            },
            "schemas": schemas,
            "responses": _shared_responses(),
        },
    }


class Document:
    """The document of the manifests `capabilities()` returns (read on first use, so the list may
    name the manifest that serves the document), and the endpoint serving it."""

    def __init__(self, capabilities: Callable[[], Sequence[Capability]]) -> None:
        self._capabilities = capabilities
        self._bytes: bytes | None = None
        self.endpoint = Endpoint(PATH, "GET", self._serve, auth="none")
        self.operations = {PATH: Op("This document", id="getOpenAPIDocument", tag="platform",
                                    ok={"type": "object", "description": "OpenAPI 3.1"})}

    def bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = jsonenc.encode(build(self._capabilities()))
        return self._bytes

    def as_dict(self) -> dict:
        return jsonenc.decode(self.bytes())

    async def _serve(self, call: Call) -> Response:
        return Response(self.bytes(), media_type="application/json")
