"""The public endpoints of unsubscribe and the preference center (engagement contract 2), all
authenticated by email_hmac, none setting a cookie:

    POST /unsubscribe-oneclick   RFC 8058 one-click (form path, identity in the query) and the JSON path
    GET  /unsubscribe-oneclick   303 to the notification center (changes nothing)
    GET  /preferences            what the contact may see of itself, its lists
    POST /preferences            language and/or timezone
    POST /subscribe              the public form (lists) or, with contact.email_hmac, the owner's subscribe
    GET  /notification-center    the page (server-rendered HTML, works without JavaScript)
    POST /preferences/form       the page's forms (application/x-www-form-urlencoded), answered 303 to the page
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.responses import RedirectResponse
from starlette.routing import Route

from postroom.lists import api as lists_api, model as lists_model, store as lists_store
from postroom.contacts import store as contacts_store
from postroom.platform import ratelimit
from postroom.platform.errors import RuleError
from postroom.platform.http import decode_object, error_response, json_response, read_body, workspace_from
from postroom.preferences import model, page, store
from postroom.templates import model as templates_model
from postroom.templates.render.context import Links

SUCCESS = {"success": True}


def _endpoint(request, ws_settings: dict) -> str:
    """E (0.1): the workspace's custom endpoint, else this installation's public one."""
    server = request.app.state.settings.api_endpoint or str(request.base_url)
    return templates_model.public_endpoint(ws_settings, server)


async def _verified(request, conn, who: model.Identity) -> dict:
    """The workspace's settings when `who` presents a valid email_hmac; else 401 (an unknown
    workspace is answered the same as a wrong HMAC)."""
    return (await _verified_with_secret(request, conn, who))[0]


async def _verified_with_secret(request, conn, who: model.Identity) -> tuple[dict, str]:
    found = await store.workspace(conn, who.workspace_id, request.app.state.settings.key_bytes)
    if found is None or not model.hmac_valid(found[1], who.email, who.email_hmac):
        raise model.unauthorized()
    return found


async def _count(conn, workspace_id: str, buckets: dict, window: int = model.RATE_WINDOW) -> None:
    if buckets:
        wait = await ratelimit.count_attempt(conn, workspace_id, buckets, window)
        if wait is not None:
            raise model.rate_limited(wait)


def _is_json(request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


# ---------------------------------------------------------------- /unsubscribe-oneclick (2.4)

async def oneclick(request):
    if request.method == "GET":
        return await _oneclick_get(request)
    if request.method != "POST":
        return error_response(405, "Method not allowed", {"Allow": "POST"})
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    if _is_json(request):
        click = model.parse_oneclick_json(decode_object(body))
        if model.is_bot(request.headers.get("user-agent")):
            return json_response(SUCCESS)  # a scanner following the page's call: no effect
    else:
        click = model.parse_oneclick_query(request.query_params)  # the body (read to its limit) is ignored
    who = click.who
    async with state.pool.acquire() as conn:
        if who.email_hmac is not None:
            await _verified(request, conn, who)
            msg = await store.message(conn, who.workspace_id, click.message_id)
            msg = msg if msg is not None and msg["contact_email"] == who.email else None
        else:  # a link without email_hmac: the message it names vouches for it
            msg = await store.message(conn, who.workspace_id, click.message_id)
            if not model.message_vouches(msg, click):
                raise model.unauthorized()
        await _count(conn, who.workspace_id, model.unsubscribe_buckets(who.email))
        await store.unsubscribe(conn, who.workspace_id, who.email, click.list_ids, msg)
    return json_response(SUCCESS)


async def _oneclick_get(request):
    """A link checker or a person opening the header URL: never an unsubscribe. With a valid
    email_hmac, 303 to the notification center (no action: the page shows the lists)."""
    params = request.query_params
    not_allowed = error_response(405, "Method not allowed", {"Allow": "POST"})
    try:
        who = model.Identity(model.required(params.get("wid"), "wid"), model.email_param(params.get("email")),
                             model.required(params.get("email_hmac"), "email_hmac"))
        async with request.app.state.pool.acquire() as conn:
            ws_settings, secret = await _verified_with_secret(request, conn, who)
    except RuleError:
        return not_allowed
    center = Links(_endpoint(request, ws_settings), who.workspace_id, secret, who.email, "").notification_center()
    return RedirectResponse(center, status_code=303, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- /preferences (2.5, 2.6)

async def preferences(request):
    if request.method == "GET":
        return await _read(request)
    if request.method == "POST":
        return await _write(request)
    return error_response(405, "Method not allowed", {"Allow": "GET, POST"})


async def _read(request):
    who = model.parse_preferences_query(request.query_params)
    state = request.app.state
    async with state.pool.acquire() as conn:
        # Verified first: a request that fails it writes nothing in the workspace, not even a counter.
        ws_settings = await _verified(request, conn, who)
        await _count(conn, who.workspace_id, model.read_buckets(lists_api.client_address(request)))
        found = await store.contact(conn, who.workspace_id, who.email)
        if found is None:
            raise model.PreferencesError(model.CONTACT_NOT_FOUND, 404)
        public = model.public_lists(await lists_store.all_lists(conn, who.workspace_id))
        memberships = await store.memberships(conn, who.workspace_id, who.email)
    return json_response({
        "contact": model.contact_view(found),
        "public_lists": [lists_model.list_to_wire(row) for row in public],
        "contact_lists": memberships,
        "logo_url": ws_settings.get("logo_url") or "",
        "website_url": ws_settings.get("website_url") or "",
    })


async def _write(request):
    state = request.app.state
    update = model.parse_update(decode_object(await read_body(request, state.settings.max_body_bytes)))
    who = update.who
    async with state.pool.acquire() as conn:
        await _verified(request, conn, who)  # before counting, as above
        await _count(conn, who.workspace_id, model.write_buckets(who.email, lists_api.client_address(request)))
        if not await store.update_contact(conn, state.pool, who.workspace_id, who.email, update.changes):
            raise model.PreferencesError(model.CONTACT_NOT_FOUND, 404)
    return json_response(SUCCESS)


# ---------------------------------------------------------------- POST /subscribe (2.7)

async def subscribe(request):
    """The public form; a `contact.email_hmac` makes it the mailbox owner's subscribe (confirm a
    pending membership, re-subscribe, a private list the contact is already on)."""
    if request.method != "POST":
        return error_response(405, "Method not allowed", {"Allow": "POST"})
    body = decode_object(await read_body(request, request.app.state.settings.max_body_bytes))
    contact = body.get("contact")
    if not isinstance(contact, dict) or contact.get("email_hmac") in (None, ""):
        return await lists_api.subscribe_form(request, body)
    ws = workspace_from(body.get("workspace_id"), "workspace_id is required")
    incoming, list_ids = lists_model.parse_subscribe(body)
    given = model.required(contact.get("email_hmac"), "contact.email_hmac")
    # The contact's fields in the body are ignored: the page sends back what it was shown.
    await owner_subscribe(request, model.Identity(ws, incoming["email"], given), list_ids)
    return json_response(SUCCESS)


async def owner_subscribe(request, who: model.Identity, list_ids: list[str]) -> None:
    ws, email = who.workspace_id, who.email
    async with request.app.state.pool.acquire() as conn:
        await _verified(request, conn, who)
        lists_model.check_lists(list_ids, await lists_store.lists_by_ids(conn, ws, list_ids), False)
        wait = await ratelimit.count_attempt(conn, ws, lists_model.rate_buckets(email, lists_api.client_address(request)),
                                             lists_model.RATE_WINDOW)
        if wait is not None:
            raise RuleError(lists_model.RATE_LIMITED, 429, {"Retry-After": str(wait)})
        async with conn.transaction():
            rows = lists_model.check_lists(list_ids, await lists_store.lists_by_ids(conn, ws, list_ids, share=True),
                                           False)
            await contacts_store.create_if_absent(conn, ws, {"email": email})
            await lists_store.subscribe(conn, ws, email, rows, True, lists_api.links(request, conn, ws, email),
                                        owner=True)


# ---------------------------------------------------------------- the page (2.9)

async def center(request):
    """GET /notification-center: the page, server-rendered; forms post to /preferences/form. It
    needs no assets, so no sub-path is served (the contract's single-page app had them)."""
    if request.method != "GET":
        return error_response(405, "Method not allowed", {"Allow": "GET"})
    params = request.query_params
    accept = request.headers.get("accept-language")
    if not (params.get("wid") and params.get("email") and params.get("email_hmac")):
        return page.screen(request, "missing", 400, accept)
    if model.is_preview(params):
        return page.screen(request, "preview", 200, accept)
    state = request.app.state
    try:
        who = model.Identity(model.required(params.get("wid"), "wid"), model.email_param(params.get("email")),
                             model.required(params.get("email_hmac"), "email_hmac"))
        async with state.pool.acquire() as conn:
            ws_settings = await _verified(request, conn, who)
            await _count(conn, who.workspace_id, model.read_buckets(lists_api.client_address(request)))
            found = await store.contact(conn, who.workspace_id, who.email)
            if found is None:
                return page.screen(request, "not_found", 404, accept, ws_settings)
            public = model.public_lists(await lists_store.all_lists(conn, who.workspace_id))
            memberships = await store.memberships(conn, who.workspace_id, who.email)
    except RuleError as exc:
        kind = "rate" if exc.status == 429 else "invalid"
        return page.screen(request, kind, exc.status if exc.status in (401, 429) else 400, accept,
                           headers=exc.headers)
    return page.center(request, who, ws_settings, found, model.page_rows(memberships, public), accept)


async def form(request):
    """POST /preferences/form: one of the page's buttons; 303 back to the page with a notice."""
    if request.method != "POST":
        return error_response(405, "Method not allowed", {"Allow": "POST"})
    state = request.app.state
    raw = await read_body(request, state.settings.max_body_bytes)
    fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    accept = request.headers.get("accept-language")
    try:
        post = model.parse_form(fields)
    except RuleError:
        return page.screen(request, "invalid", 400, accept)
    who = post.who
    try:
        notice = await _apply(request, post)
    except RuleError as exc:
        if exc.status in (401, 429):
            kind = "rate" if exc.status == 429 else "invalid"
            return page.screen(request, kind, exc.status, accept, headers=exc.headers)
        notice = "failed"
    ui = post.settings.get("language") or post.ui_language
    query = {"wid": who.workspace_id, "email": who.email, "email_hmac": who.email_hmac, "notice": notice}
    if ui:
        query["lang"] = ui
    return RedirectResponse(f"{page.base_path(request)}/notification-center?{urlencode(sorted(query.items()))}",
                            status_code=303, headers={"Cache-Control": "no-store"})


async def _apply(request, post: model.FormPost) -> str:
    """The effect of one form post, through the same paths as the JSON endpoints; the notice."""
    who = post.who
    ws, email = who.workspace_id, who.email
    state = request.app.state
    if post.action == "settings":
        async with state.pool.acquire() as conn:
            await _verified(request, conn, who)
            await _count(conn, ws, model.write_buckets(email, lists_api.client_address(request)))
            if not await store.update_contact(conn, state.pool, ws, email, post.settings):
                return "failed"
        return "saved"
    if post.action == "unsubscribe":
        async with state.pool.acquire() as conn:
            await _verified(request, conn, who)
            await _count(conn, ws, model.unsubscribe_buckets(email))
            msg = await store.message(conn, ws, post.message_id)
            msg = msg if msg is not None and msg["contact_email"] == email else None
            await store.unsubscribe(conn, ws, email, [post.list_id], msg)
        return "unsubscribed"
    async with state.pool.acquire() as conn:
        before = await lists_store.get_membership(conn, ws, post.list_id, email)
    await owner_subscribe(request, who, [post.list_id])
    async with state.pool.acquire() as conn:
        after = await lists_store.get_membership(conn, ws, post.list_id, email)
    status = after["status"] if after else None
    if status == lists_model.ACTIVE:
        return "confirmed" if before is not None and before["status"] == lists_model.PENDING else "subscribed"
    return "pending" if status == lists_model.PENDING else "failed"


ROUTES = [
    Route("/unsubscribe-oneclick", oneclick, methods=None),
    Route("/preferences", preferences, methods=None),
    Route("/preferences/form", form, methods=None),
    Route("/subscribe", subscribe, methods=None),
    Route("/notification-center", center, methods=None),
]
