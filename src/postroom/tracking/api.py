"""Open and click tracking endpoints (engagement contract 1.6-1.9).

Public (no token; the URL's token is the credential): GET/HEAD `/t/{token}` (the open pixel, for
any token), `/r/{token}` (303 to a valid click token's destination), and the legacy `/opens` and
`/visit`, which never record and never redirect. Whether a hit is recorded never changes the
answer; a database outage while recording is logged and the answer is still given, so a reader's
click always gets where it was going.

Authenticated: messages.linkStats and messages.broadcastLinkStats (read access to
message_history).
"""

from __future__ import annotations

import datetime as _dt
import logging
import time

from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from postroom.platform.errors import RuleError
from postroom.platform.http import DB_UNAVAILABLE, NOT_AN_OUTAGE, Call, Endpoint, error_response
from postroom.platform.params import query_param
from postroom.tracking import model, store

log = logging.getLogger("postroom.tracking")

_ALLOW = {"Allow": ", ".join(model.METHODS)}


def _keys(settings) -> tuple[bytes, ...]:
    """The current installation key first, then the retired ones (0.3)."""
    return (settings.key_bytes, *settings.previous_key_bytes)


def _refused(request) -> Response | None:
    if request.method not in model.METHODS:
        return error_response(405, model.METHOD_NOT_ALLOWED, _ALLOW)
    return None


def _pixel(request) -> Response:
    body = b"" if request.method == "HEAD" else model.PIXEL
    return Response(body, media_type="image/png",
                    headers={**model.PIXEL_HEADERS, "content-length": str(len(model.PIXEL))})


def _interstitial(url: str) -> Response:
    return HTMLResponse(model.interstitial(url), headers=model.REDIRECT_HEADERS)


async def _record(request, hit: model.Hit) -> None:
    """Rules 3 and 6 of 1.7 and the writes of 1.8, in one transaction."""
    state = request.app.state
    at = _dt.datetime.now(_dt.timezone.utc)
    try:
        async with state.pool.acquire() as conn, conn.transaction():
            if not await store.tracking_on(conn, hit.workspace_id):
                return
            if hit.kind == model.OPEN:
                await store.record_open(conn, hit.workspace_id, hit.message_id, at)
            else:
                await store.record_click(conn, hit.workspace_id, hit.message_id, hit.link_index, hit.url, at)
    except DB_UNAVAILABLE as exc:
        if isinstance(exc, NOT_AN_OUTAGE):
            raise
        log.warning("%s of a message of workspace %s not recorded (database unavailable): %s",
                    "open" if hit.kind == model.OPEN else "click", hit.workspace_id, type(exc).__name__)


def _recordable(request, hit: model.Hit | None) -> bool:
    return model.recordable(request.method, hit, request.headers.get("user-agent"), time.time())


async def open_pixel(request) -> Response:
    """GET/HEAD /t/{token}: the pixel whatever the token; a valid open token may be recorded."""
    refused = _refused(request)
    if refused is not None:
        return refused
    hit = model.read_open(_keys(request.app.state.settings), request.path_params.get("token", ""))
    if _recordable(request, hit):
        await _record(request, hit)
    return _pixel(request)


async def click_redirect(request) -> Response:
    """GET/HEAD /r/{token}: 303 to a valid click token's destination, recorded when 1.7 allows;
    400 for a token that is not one; the interstitial page for a legacy token."""
    refused = _refused(request)
    if refused is not None:
        return refused
    found = model.read_click(_keys(request.app.state.settings), request.path_params.get("token", ""))
    if isinstance(found, model.Legacy):
        return _interstitial(found.url)
    if _recordable(request, found):
        await _record(request, found)
    return Response(status_code=303, headers={"Location": model.location(found.url), **model.REDIRECT_HEADERS})


async def legacy_open(request) -> Response:
    """GET/HEAD /opens?mid&wid&ts (Notifuse's unsigned form): the pixel, never recorded."""
    return _refused(request) or _pixel(request)


async def legacy_visit(request) -> Response:
    """GET/HEAD /visit?mid&wid&ts&url (Notifuse's unsigned form): the interstitial page, never a
    redirect (anyone can write such a URL), never recorded."""
    refused = _refused(request)
    if refused is not None:
        return refused
    url = query_param(request.query_params, "url")
    if url is None:
        raise RuleError(model.MISSING_URL)
    return _interstitial(url)


# app.py hands every method to these handlers, which answer 405 themselves
ROUTES = [
    Route("/t/{token}", open_pixel, methods=None),
    Route("/t/", open_pixel, methods=None),  # the empty token: the pixel too
    Route("/r/{token}", click_redirect, methods=None),
    Route("/r/", click_redirect, methods=None),  # the empty token: 400 Missing token
    Route("/opens", legacy_open, methods=None),
    Route("/visit", legacy_visit, methods=None),
]


# ---------------------------------------------------------------- per-link statistics (1.9)

async def link_stats(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.link_stats(conn, call.workspace_id, call.input)
    return {"links": [model.link_wire(r) for r in rows]}


async def broadcast_link_stats(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.broadcast_link_stats(conn, call.workspace_id, call.input)
    return {"links": [model.broadcast_link_wire(r) for r in rows]}


ENDPOINTS = [
    Endpoint("/api/messages.linkStats", "GET", link_stats, resource="message_history",
             parse=lambda c: model.parse_link_stats(c.query)),
    Endpoint("/api/messages.broadcastLinkStats", "GET", broadcast_link_stats, resource="message_history",
             parse=lambda c: model.parse_broadcast_link_stats(c.query)),
]
