"""Builds the ASGI application from the capabilities' manifests, behind one edge."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

from starlette.routing import Route, Router

from postroom import workers as background
from postroom.auth import api as auth_api, model as auth_model
from postroom.auth.capability import CAPABILITY as AUTH
from postroom.broadcasts import api as broadcasts_api
from postroom.broadcasts.capability import CAPABILITY as BROADCASTS
from postroom.contacts.capability import CAPABILITY as CONTACTS
from postroom.customevents.capability import CAPABILITY as CUSTOM_EVENTS
from postroom.delivery.capability import CAPABILITY as DELIVERY
from postroom.inbound import api as inbound_api
from postroom.inbound.capability import CAPABILITY as INBOUND
from postroom.lists.capability import CAPABILITY as LISTS
from postroom.platform import db, observability, openapi
from postroom.platform.capability import Capability
from postroom.platform.config import Settings
from postroom.platform.http import Api, Edge, error_response, route
from postroom.preferences.capability import CAPABILITY as PREFERENCES
from postroom.segments.capability import CAPABILITY as SEGMENTS
from postroom.templates.capability import CAPABILITY as TEMPLATES
from postroom.timeline.capability import CAPABILITY as TIMELINE
from postroom.tracking.capability import CAPABILITY as TRACKING
from postroom.webhooks.capability import CAPABILITY as WEBHOOKS
from postroom.workspaces.capability import CAPABILITY as WORKSPACES

DOCUMENT = openapi.Document(lambda: CAPABILITIES)

# What the platform serves itself: the OpenAPI document and the probes.
PLATFORM = Capability(
    "platform", endpoints=[DOCUMENT.endpoint], operations=DOCUMENT.operations, paths=observability.PATHS,
    routes=[Route("/healthz", observability.healthz, methods=None),
            Route("/readyz", observability.readyz, methods=None),
            Route("/metrics", observability.metrics_handler(auth_model.bearer_token), methods=None)])

# The one list of manifests: the API, the document, the CLI's commands and the workers come from it.
CAPABILITIES: tuple[Capability, ...] = (AUTH, WORKSPACES, CONTACTS, LISTS, CUSTOM_EVENTS, SEGMENTS, TIMELINE,
                                        WEBHOOKS, TEMPLATES, DELIVERY, TRACKING, INBOUND, PREFERENCES,
                                        BROADCASTS, PLATFORM)

# What happens around an integration's creation and deletion in capabilities above delivery
# (provider webhooks, delivery-contract 1.5): delivery calls these, it never imports them.
INTEGRATION_HOOKS = (inbound_api.HOOKS,)
# What may refuse a segment's deletion (segments-contract: an active broadcast reads it).
SEGMENT_USERS = (broadcasts_api.segment_user,)


def document() -> dict:
    """The OpenAPI document as GET /api/openapi.json serves it."""
    return DOCUMENT.as_dict()


def build_api() -> Api:
    api = Api(auth_api.authenticate, auth_api.authorize)
    for capability in CAPABILITIES:
        api.extend(capability.endpoints)
    return api


def loops() -> list:
    return [loop for capability in CAPABILITIES for loop in capability.loops]


async def not_found(scope, receive, send):
    await error_response(404, "not found")(scope, receive, send)


def create_app(settings: Settings, dsn: str, pool=None, workers: bool = False,
               public_url: str | None = None) -> observability.Observed:
    """`pool` may be given by the caller (tests share one); otherwise the app opens its own.
    With `workers`, the capabilities' loops (postroom.workers) run in this process too. The
    capabilities' servers (the SMTP bridge) run with the app; `public_url` is the server's own
    URL, for what they build links with when no workspace setting or POSTROOM_API_ENDPOINT names one."""
    state = SimpleNamespace(settings=settings, pool=pool, dsn=dsn, public_url=public_url,
                            integration_hooks=INTEGRATION_HOOKS, segment_users=SEGMENT_USERS)
    settings.ensure_secret_key()
    api = build_api()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        owned = state.pool is None
        if owned:
            state.pool = await db.create_pool(dsn, min_size=settings.pool_min, max_size=settings.pool_max,
                                              timeout=settings.db_timeout)
        tasks, servers = [], []
        try:
            for start in (start for capability in CAPABILITIES for start in capability.servers):
                server = await start(state)
                if server is not None:
                    servers.append(server)
            if workers:
                tasks = await background.start(state, loops())
            yield
        finally:
            for server in reversed(servers):
                await server.close()
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
            *[route(r.path, r.endpoint) for capability in CAPABILITIES for r in capability.routes],
            route("/api/{rest:path}", api.__call__),
        ],
        default=not_found,
        lifespan=lifespan,
    )
    # the access log and the request metrics see every answer, the edge's own errors included
    paths = [*api.endpoints, *(r.path for r in router.routes if "{" not in r.path)]
    probes = [probe for capability in CAPABILITIES for probe in capability.probes]
    return observability.Observed(Edge(router, state, cors_origin=settings.cors_origin), state, paths, probes)
