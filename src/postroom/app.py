"""Builds the ASGI application: every capability's endpoints behind one edge."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

from starlette.routing import Router

from postroom.auth import api as auth_api
from postroom.contacts import api as contacts_api, imports as contacts_imports
from postroom.lists import api as lists_api
from postroom.timeline import api as timeline_api
from postroom.webhooks import api as webhooks_api
from postroom.platform import db, observability, openapi
from postroom.platform.config import Settings
from postroom.platform.http import Api, Edge, error_response, json_response, route
from postroom.workspaces import api as workspaces_api
from postroom import workers as background

# Each module lists its /api endpoints in ENDPOINTS and may add other paths in ROUTES.
CAPABILITIES = (auth_api, workspaces_api, contacts_api, contacts_imports, lists_api, timeline_api, webhooks_api,
                openapi)


def build_api() -> Api:
    api = Api()
    for capability in CAPABILITIES:
        api.extend(capability.ENDPOINTS)
    return api


async def healthz(request):
    if request.method not in ("GET", "HEAD"):
        return error_response(405, "Method not allowed", {"Allow": "GET"})
    return json_response({"status": "ok"})


async def not_found(scope, receive, send):
    await error_response(404, "not found")(scope, receive, send)


def create_app(settings: Settings, dsn: str, pool=None, workers: bool = False) -> observability.Observed:
    """`pool` may be given by the caller (tests share one); otherwise the app opens its own.
    With `workers`, the background loops (postroom.workers) run in this process too."""
    state = SimpleNamespace(settings=settings, pool=pool, dsn=dsn)
    settings.ensure_secret_key()
    api = build_api()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        owned = state.pool is None
        if owned:
            state.pool = await db.create_pool(dsn, min_size=settings.pool_min, max_size=settings.pool_max,
                                              timeout=settings.db_timeout)
        tasks = []
        try:
            if workers:
                tasks = await background.start(state)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if workers:
                await background.close(state)
            if owned:
                await state.pool.close()
                state.pool = None

    router = Router(
        routes=[
            # every method reaches the handler: a mismatch must get our JSON 405, not the router's text one
            route("/healthz", healthz),
            route("/readyz", observability.readyz),
            route("/metrics", observability.metrics),
            *[route(r.path, r.endpoint) for capability in CAPABILITIES for r in getattr(capability, "ROUTES", ())],
            route("/api/{rest:path}", api.__call__),
        ],
        default=not_found,
        lifespan=lifespan,
    )
    # the access log and the request metrics see every answer, the edge's own errors included
    paths = [*api.endpoints, *(r.path for r in router.routes if "{" not in r.path)]
    return observability.Observed(Edge(router, state, cors_origin=settings.cors_origin), state, paths)
