"""The OpenAPI part of tracking: the public /t/, /r/, /opens and /visit, and the per-link click
statistics."""

from __future__ import annotations

from postroom.platform.openapi import STRING, TIME, Op, array, error_response, obj, param, ref
from postroom.tracking import model

_COUNT = {"type": "integer", "minimum": 0}
_HEADER = {"schema": STRING, "required": True}

SCHEMAS = {
    "LinkClicks": obj(
        {"link_index": _COUNT, "url": STRING, "clicks": _COUNT, "first_clicked_at": TIME, "last_clicked_at": TIME},
        ["link_index", "url", "clicks", "first_clicked_at", "last_clicked_at"]),
    "BroadcastLinkClicks": obj(
        {"link_index": _COUNT, "url": {"type": "string", "description": "the destination of the latest click"},
         "clicks": _COUNT, "unique_clicks": {**_COUNT, "description": "distinct messages"}},
        ["link_index", "url", "clicks", "unique_clicks"]),
}

OPERATIONS = {
    "/api/messages.linkStats": Op(
        "Every recorded click of a message, per tracked link", id="getMessageLinkStats", tag="messages",
        params=[param("message_id", STRING, True)],
        description="Links are numbered 0, 1, ... among a message's click-tracked links, in document order.",
        ok=obj({"links": array(ref("LinkClicks"))}, ["links"])),
    "/api/messages.broadcastLinkStats": Op(
        "A broadcast's clicks per tracked link", id="getBroadcastLinkStats", tag="messages",
        params=[param("broadcast_id", STRING, True)],
        description="Ordered by unique_clicks (distinct messages), most first, then link_index.",
        ok=obj({"links": array(ref("BroadcastLinkClicks"))}, ["links"])),
}

_TOKEN = {"name": "token", "in": "path", "required": True, "schema": STRING,
          "description": f"the token of the message's link (at most {model.tokens.MAX_TOKEN} characters)"}
_PIXEL = {"description": "A 1x1 transparent PNG, whatever the token (recorded only when valid, by GET, not "
                         "from a bot, 7 s or more after the send, with tracking on)",
          "headers": {"Cache-Control": _HEADER, "Pragma": _HEADER, "Expires": _HEADER},
          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
_INTERSTITIAL = {"description": "A page showing the destination of a link Postroom did not sign (a legacy Notifuse "
                                "token or /visit): never a redirect, never recorded",
                 "headers": {"Cache-Control": _HEADER, "Referrer-Policy": _HEADER},
                 "content": {"text/html": {"schema": STRING}}}
_REDIRECT = {"description": "To the destination of a valid click token, exactly as encoded (UTM included)",
             "headers": {"Location": _HEADER, "Cache-Control": _HEADER, "Referrer-Policy": _HEADER}}
_BAD_CLICK = error_response(f"`{model.MISSING_TOKEN}`, `{model.INVALID_TOKEN}` (not a click token of this "
                            f"installation), `{model.INVALID_FORMAT}` or `{model.MISSING_URL}`")


def _get_head(operation_id: str, summary: str, responses: dict, parameters: list, description: str) -> dict:
    """GET, and HEAD (the same answer without a body, never recorded)."""
    get = {"summary": summary, "description": description, "tags": ["public"], "operationId": operation_id,
           "security": [], "parameters": parameters, "responses": responses}
    head = dict(get, operationId="head" + operation_id.removeprefix("get"), summary=summary + " (headers only)",
                responses={status: {"description": r.get("description", "see GET"), **(
                    {"headers": r["headers"]} if "headers" in r else {})} for status, r in responses.items()})
    return {"get": get, "head": head}


def _open(operation_id: str, parameters: list, description: str) -> dict:
    return _get_head(operation_id, "The open pixel", {"200": _PIXEL}, parameters, description)


def _click(operation_id: str, parameters: list, description: str) -> dict:
    return _get_head(operation_id, "A tracked link", {"303": _REDIRECT, "200": _INTERSTITIAL, "400": _BAD_CLICK},
                     parameters, description)


_LEGACY_PARAMS = [param("mid", STRING), param("wid", STRING), param("ts", STRING)]

PATHS = {
    "/t/{token}": _open("getOpenPixel", [_TOKEN], "Records the open of a valid open token."),
    "/t/": _open("getOpenPixelWithoutToken", [], "No token: the pixel, nothing recorded."),
    "/r/{token}": _click("getClickRedirect", [_TOKEN], "A valid click token: 303 to its destination, the click "
                         "recorded. A legacy Notifuse token: the interstitial page."),
    "/r/": _click("getClickRedirectWithoutToken", [], "No token: 400 `Missing token`."),
    "/opens": _open("getLegacyOpen", _LEGACY_PARAMS, "Notifuse's unsigned open URL: the pixel, never recorded."),
    "/visit": _get_head("getLegacyVisit", "Notifuse's unsigned click URL",
                        {"200": _INTERSTITIAL, "400": error_response(f"`{model.MISSING_URL}`: no `url`")},
                        [*_LEGACY_PARAMS, param("url", STRING, True)],
                        "The interstitial page with `url`; never a redirect (anyone can write this URL), "
                        "never recorded."),
}

