"""The HTTP edge: the error envelope, JSON bodies, the endpoint table and its dispatch.

Order of checks for an /api endpoint (the contract's): unknown path 404, token 401,
method 405, body 400/413, workspace 400/403, permission 403, then the handler. An endpoint
with a `parse` function has its whole request checked (400) before the membership and
permission checks (403), as Notifuse orders them for templates.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Literal

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from postroom.platform import jsonenc
from postroom.platform.errors import RuleError
from postroom.platform.fields import required_string
from postroom.platform.params import query_param

log = logging.getLogger("postroom.http")

WORKSPACE_ID = re.compile(r"^[a-z0-9_-]{1,32}$")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsonenc.encode(data), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


# ---- request bodies -------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RuleError(f"request body exceeds the limit of {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RuleError(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_object(body: bytes, max_depth: int | None = None) -> dict:
    """The body as a JSON object, else 400 `Invalid request body`; with `max_depth`, a body that
    nests deeper (measured on the raw bytes, jsonenc.nesting_exceeds) is refused undecoded."""
    if max_depth is not None and jsonenc.nesting_exceeds(body, max_depth):
        raise RuleError("Invalid request body")
    try:
        value = jsonenc.decode(body)
    except ValueError:
        raise RuleError("Invalid request body") from None
    if not isinstance(value, dict):
        raise RuleError("Invalid request body")
    return value


# ---- endpoints ------------------------------------------------------------------------------

@dataclass
class Call:
    """What a handler gets: the request, the decoded input, who is calling and where."""

    request: Request
    body: dict            # decoded JSON body for POST, {} for GET
    query: Any            # starlette QueryParams
    principal: Any        # postroom.auth.model.Principal or None
    workspace_id: str | None
    pool: asyncpg.Pool
    membership: Any = None  # postroom.auth.model.Membership on workspace endpoints
    input: Any = None       # what the endpoint's `parse` made of the request, when it has one

    @property
    def settings(self):
        return self.request.app.state.settings

    def param(self, name: str) -> str | None:
        """A query parameter; empty counts as absent (see query_param)."""
        return query_param(self.query, name)


Handler = Callable[[Call], Awaitable[Any]]


# "workspace": a token and a membership of the named workspace (with `resource` read/write);
# "user": a token only; "none": public.
Auth = Literal["workspace", "user", "none"]


@dataclass(frozen=True)
class Endpoint:
    path: str                  # e.g. "/api/contacts.upsert"
    method: str                # "GET" or "POST"
    handler: Handler
    auth: Auth = "workspace"
    resource: str | None = None
    write: bool = False
    missing_workspace: str = "workspace_id is required"
    workspace_param: str = "workspace_id"
    # parse(call) -> call.input (or an awaitable of it): checks the whole request, workspace_id
    # included (with the endpoint's own messages), before the membership and permission checks. The edge's own
    # workspace_id rule then only guards the lookup: an id the parser let through that no
    # workspace can have is answered like any workspace the caller is not a member of (403).
    parse: Callable[[Call], Any] | None = None
    max_depth: int | None = None  # JSON nesting limit of the body (decode_object)
    body_limit: str = "max_body_bytes"  # the Settings attribute that bounds the body (413 above it)


def workspace_from(value: Any, missing: str, name: str = "workspace_id") -> str:
    required_string(value, name, missing=missing)
    if not WORKSPACE_ID.match(value):
        raise RuleError(f"invalid {name}: must be 1-32 characters of a-z, 0-9, _ and -")
    return value


# authenticate(request, state) -> principal, raising a RuleError (401) for a missing or bad token;
# authorize(state, principal, workspace_id, resource, write) -> membership, raising 403.
Authenticate = Callable[[Request, Any], Awaitable[Any]]
Authorize = Callable[[Any, Any, str, "str | None", bool], Awaitable[Any]]


class Api:
    """Dispatches /api/* by exact path to the registered endpoints. Who may call is decided by
    the `authenticate` and `authorize` given (the auth capability's), before the handler runs."""

    def __init__(self, authenticate: Authenticate, authorize: Authorize) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.authenticate = authenticate
        self.authorize = authorize

    def add(self, endpoint: Endpoint) -> None:
        if endpoint.path in self.endpoints:
            raise ValueError(f"endpoint registered twice: {endpoint.path}")
        self.endpoints[endpoint.path] = endpoint

    def extend(self, endpoints) -> None:
        for endpoint in endpoints:
            self.add(endpoint)

    async def __call__(self, request: Request) -> Response:
        endpoint = self.endpoints.get(request.url.path)
        if endpoint is None:
            return error_response(404, "not found")
        state = request.app.state
        principal = None
        if endpoint.auth != "none":
            principal = await self.authenticate(request, state)
        if request.method != endpoint.method:
            return error_response(405, "Method not allowed", {"Allow": endpoint.method})
        body: dict = {}
        if endpoint.method == "POST":
            body = decode_object(await read_body(request, getattr(state.settings, endpoint.body_limit)),
                                 endpoint.max_depth)
        call = Call(request, body, request.query_params, principal, None, state.pool)
        if endpoint.parse is not None:
            call.input = endpoint.parse(call)
            if inspect.isawaitable(call.input):
                call.input = await call.input
        if endpoint.auth == "workspace":
            raw = body.get(endpoint.workspace_param) if endpoint.method == "POST" else \
                query_param(request.query_params, endpoint.workspace_param)
            if endpoint.parse is not None and isinstance(raw, str) and raw and "\x00" not in raw:
                call.workspace_id = raw  # the parser checked it; an id no workspace has gets 403 below
            else:
                call.workspace_id = workspace_from(raw, endpoint.missing_workspace, endpoint.workspace_param)
            if WORKSPACE_ID.match(call.workspace_id):  # for the access log (platform.observability)
                request.state.workspace_id = call.workspace_id
            call.membership = await self.authorize(state, principal, call.workspace_id, endpoint.resource,
                                                   endpoint.write)
        result = await endpoint.handler(call)
        if isinstance(result, Response):
            return result
        return json_response(result)


def route(path: str, handler: Callable[[Request], Awaitable[Response]]):
    """A starlette Route that hands every method to `handler` (which answers 405 itself), so
    a wrong method gets our JSON error rather than the router's plain-text one."""
    from starlette.routing import Route

    return Route(path, _AllMethods(handler))


class _AllMethods:
    """An ASGI app (not a function, so the router passes every method through)."""

    def __init__(self, handler) -> None:
        self.handler = handler

    async def __call__(self, scope, receive, send) -> None:
        response = await self.handler(Request(scope, receive))
        await response(scope, receive, send)


# ---- the outermost layer: CORS, errors, outages -----------------------------------------------

DB_UNAVAILABLE = (
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,  # 57P02: the server restarts after a backend crashed
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
    # a session the server terminated mid-operation is sometimes reported as a protocol state
    # error rather than a closed connection (MagicStack/asyncpg#1069); the pool drops it on release
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
# Client-side errors of the driver that are ours to fix, not an outage: a value the driver could
# not encode (DataError), a connection used by two tasks at once. They are 500s with a traceback.
NOT_AN_OUTAGE = (asyncpg.exceptions.DataError,)
# Outage classes that can also come from a bug: logged with their traceback.
_AMBIGUOUS = (asyncpg.exceptions.InterfaceError, asyncpg.exceptions.InternalClientError)
OUTAGE_LOG_EVERY = 1.0  # seconds: during an outage, one warning per interval, with a count of the rest


class Edge:
    """The ASGI entry point: CORS on every response, OPTIONS answered here, and no exception
    ever leaves as a stack trace. `state` is what handlers see as request.app.state."""

    def __init__(self, app, state, cors_origin: str = "*") -> None:
        self.app = app
        self.state = state
        self.cors = [
            (b"access-control-allow-origin", cors_origin.encode()),
            (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
            (b"access-control-allow-headers",
             b"Accept, Content-Type, Content-Length, Accept-Encoding, Authorization"),
        ]
        self._outage_quiet_until = 0.0
        self._outage_unlogged = 0
        self.clock = time.monotonic

    def _log_outage(self, scope, exc: BaseException) -> None:
        """During an outage every request fails the same way: one line per OUTAGE_LOG_EVERY, the
        next one saying how many went unlogged meanwhile."""
        now = self.clock()
        if now < self._outage_quiet_until:
            self._outage_unlogged += 1
            return
        more, self._outage_unlogged = self._outage_unlogged, 0
        self._outage_quiet_until = now + OUTAGE_LOG_EVERY
        log.warning("database unavailable for %s %s: %s: %s%s", scope["method"], scope["path"],
                    type(exc).__name__, exc, f" ({more} more since the last line)" if more else "",
                    exc_info=isinstance(exc, _AMBIGUOUS))

    async def __call__(self, scope, receive, send) -> None:
        scope["app"] = self
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*self.cors, (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        started = False

        async def send_with_cors(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *self.cors]
            await send(message)

        try:
            await self.app(scope, receive, send_with_cors)
        except RuleError as exc:
            if not started:
                await error_response(exc.status, exc.message, exc.headers)(scope, receive, send_with_cors)
        except Exception as exc:
            if isinstance(exc, DB_UNAVAILABLE) and not isinstance(exc, NOT_AN_OUTAGE):
                self._log_outage(scope, exc)  # a traceback only where a bug could hide
                if not started:
                    await error_response(503, "database unavailable", {"Retry-After": "1"})(
                        scope, receive, send_with_cors)
            else:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                if not started:
                    await error_response(500, "internal server error")(scope, receive, send_with_cors)
