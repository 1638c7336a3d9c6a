"""List, membership and subscription endpoints: decode -> model -> store -> encode.

/api/lists.* and /api/contactLists.* need the `lists` permission (reads: read, writes: write);
lists.subscribe also creates or updates the contact, so it needs contacts write as well.
POST /subscribe and GET /confirm are public (no token; an Authorization header is ignored).
"""

from __future__ import annotations

import time

from starlette.routing import Route

from postroom.auth.model import permission_error
from postroom.contacts import store as contacts_store
from postroom.lists import model, store
from postroom.platform import paging, ratelimit
from postroom.platform.errors import RuleError
from postroom.platform.fields import email_key
from postroom.templates import store as templates_store
from postroom.platform.http import (
    Call, Endpoint, error_response, json_response, workspace_from)
from postroom.workspaces import secrets

LIST_NOT_FOUND = "list not found"
MEMBERSHIP_NOT_FOUND = "Contact list relationship not found"
PAGE_DEFAULT, PAGE_MAX = 100, 1000


async def _live_list(conn, workspace_id: str, list_id: str, share: bool = False):
    """The live list (locked FOR SHARE when `share`), or 404."""
    found = await store.lists_by_ids(conn, workspace_id, [list_id], share=share)
    if list_id not in found:
        raise RuleError(LIST_NOT_FOUND, 404)
    return found[list_id]


def links(request, conn, workspace_id: str, email: str):
    """link(list_id) -> the signed confirmation URL for this contact; the workspace's secret is
    read (or made) once, in the caller's transaction."""
    settings = request.app.state.settings
    base = settings.api_endpoint or str(request.base_url)
    secret: list[bytes] = []

    async def link(list_id: str) -> str:
        if not secret:
            secret.append(await secrets.workspace_secret(conn, workspace_id, settings.key_bytes, model.CONFIRM_SECRET))
        return model.confirm_url(base, secret[0], workspace_id, list_id, email, time.time())

    return link


# ---------------------------------------------------------------- lists

async def list_lists(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.all_lists(conn, call.workspace_id)
    return {"lists": [model.list_to_wire(row) for row in rows]}


async def get_list(call: Call):
    list_id = model.list_id_param(call.param("id"))
    async with call.pool.acquire() as conn:
        row = await store.get_list(conn, call.workspace_id, list_id)
    if row is None:
        raise RuleError(LIST_NOT_FOUND, 404)
    return {"list": model.list_to_wire(row)}


def _template_check(workspace_id: str, prefix: str):
    """check(conn, ref): a double_optin_template must name a live email template of this workspace
    (that version, when it names one)."""
    async def check(conn, ref: dict) -> None:
        model.check_template_ref(prefix, ref, await templates_store.live_version(conn, workspace_id, ref["id"],
                                                                              ref["version"]))
    return check


async def create_list(call: Call):
    new = model.parse_new_list(call.body)
    async with call.pool.acquire() as conn:
        if new[model.TEMPLATE_REF] is not None:
            await _template_check(call.workspace_id, model.CREATE_PREFIX)(conn, new[model.TEMPLATE_REF])
        row = await store.create_list(conn, call.workspace_id, new)
    if row is None:
        raise RuleError(f"list already exists: {new['id']}", 409)
    return json_response({"list": model.list_to_wire(row)}, 201)


async def update_list(call: Call):
    list_id = model.list_id_param(call.body.get("id"))
    async with call.pool.acquire() as conn:
        row = await store.update_list(conn, call.workspace_id, list_id, call.body,
                                      _template_check(call.workspace_id, model.UPDATE_PREFIX))
    if row is None:
        raise RuleError(LIST_NOT_FOUND, 404)
    return {"list": model.list_to_wire(row)}


async def delete_list(call: Call):
    list_id = model.list_id_param(call.body.get("id"))
    async with call.pool.acquire() as conn:
        if not await store.delete_list(conn, call.workspace_id, list_id):
            raise RuleError(LIST_NOT_FOUND, 404)
    return {"success": True}


async def list_stats(call: Call):
    list_id = model.list_id_param(call.param("list_id"), "list_id")
    async with call.pool.acquire() as conn:
        await _live_list(conn, call.workspace_id, list_id)
        counts = await store.list_stats(conn, call.workspace_id, list_id)
    return {"list_id": list_id, "stats": {f"total_{status}": counts[status] for status in model.STATUSES}}


async def subscribe(call: Call):
    """lists.subscribe: upserts the contact (contacts.upsert's rules), then subscribes it."""
    denied = permission_error(call.membership, "contacts", True)
    if denied:
        raise RuleError(denied, 403)
    incoming, list_ids = model.parse_subscribe(call.body)
    ws = call.workspace_id
    async with call.pool.acquire() as conn:
        model.check_lists(list_ids, await store.lists_by_ids(conn, ws, list_ids), False)
    # Lists first, so that a bad list id leaves the contact untouched. The contact's upsert is
    # its own transaction (contacts.store.upsert); the memberships follow in another one.
    await contacts_store.upsert(call.pool, ws, incoming, after_write=store.sync_contact_created_at)
    email = incoming["email"]
    async with call.pool.acquire() as conn, conn.transaction():
        rows = model.check_lists(list_ids, await store.lists_by_ids(conn, ws, list_ids, share=True), False)
        await store.subscribe(conn, ws, email, rows, False, links(call.request, conn, ws, email))
    return {"success": True}


# ---------------------------------------------------------------- memberships

async def get_by_ids(call: Call):
    email = email_key(call.param("email"))
    list_id = model.list_id_param(call.param("list_id"), "list_id")
    async with call.pool.acquire() as conn:
        await _live_list(conn, call.workspace_id, list_id)
        row = await store.get_membership(conn, call.workspace_id, list_id, email)
    if row is None:
        raise RuleError(MEMBERSHIP_NOT_FOUND, 404)
    return {"contact_list": store.membership_wire(row)}


async def get_contacts_by_list(call: Call):
    """One page of the list's members in email order: `limit` (1..1000, default 100), `cursor`
    (the previous page's next_cursor), optional `status`."""
    list_id = model.list_id_param(call.param("list_id"), "list_id")
    limit = paging.parse_limit(call.param("limit"), PAGE_DEFAULT, PAGE_MAX)
    cursor = call.param("cursor")
    after = paging.decode_key_cursor(cursor) if cursor is not None else None
    status = call.param("status")
    if status is not None:
        status = model.parse_status(status)
    async with call.pool.acquire() as conn:
        lst = await _live_list(conn, call.workspace_id, list_id)
        page, last = await store.members_page(conn, call.workspace_id, lst, limit, after, status)
    out: dict = {"contact_lists": page}
    if last is not None:
        out["next_cursor"] = paging.encode_key_cursor(last)
    return out


async def get_lists_by_contact(call: Call):
    email = email_key(call.param("email"))
    async with call.pool.acquire() as conn:
        found = await store.memberships_for(conn, call.workspace_id, [email])
    return {"contact_lists": found.get(email, [])}


async def update_status(call: Call):
    body = call.body
    email = email_key(body.get("email"))
    list_id = model.list_id_param(body.get("list_id"), "list_id")
    status = model.parse_status(body.get("status"))
    ws = call.workspace_id
    async with call.pool.acquire() as conn, conn.transaction():
        lst = await _live_list(conn, ws, list_id, share=True)
        found = await store.set_status(conn, ws, lst, email, status, links(call.request, conn, ws, email))
    if not found:
        return {"success": True, "message": "contact not in list", "found": False}
    return {"success": True, "message": "status updated successfully", "found": True}


async def remove_contact(call: Call):
    body = call.body
    email = email_key(body.get("email"))
    list_id = model.list_id_param(body.get("list_id"), "list_id")
    async with call.pool.acquire() as conn, conn.transaction():
        lst = await _live_list(conn, call.workspace_id, list_id, share=True)
        await store.remove(conn, call.workspace_id, lst, email)
    return {"success": True}


ENDPOINTS = [
    Endpoint("/api/lists.list", "GET", list_lists, resource="lists"),
    Endpoint("/api/lists.get", "GET", get_list, resource="lists"),
    Endpoint("/api/lists.create", "POST", create_list, resource="lists", write=True),
    Endpoint("/api/lists.update", "POST", update_list, resource="lists", write=True),
    Endpoint("/api/lists.delete", "POST", delete_list, resource="lists", write=True),
    Endpoint("/api/lists.stats", "GET", list_stats, resource="lists"),
    Endpoint("/api/lists.subscribe", "POST", subscribe, resource="lists", write=True),
    Endpoint("/api/contactLists.getByIDs", "GET", get_by_ids, resource="lists"),
    Endpoint("/api/contactLists.getContactsByList", "GET", get_contacts_by_list, resource="lists"),
    Endpoint("/api/contactLists.getListsByContact", "GET", get_lists_by_contact, resource="lists"),
    Endpoint("/api/contactLists.updateStatus", "POST", update_status, resource="lists", write=True),
    Endpoint("/api/contactLists.removeContact", "POST", remove_contact, resource="lists", write=True),
]


# ---------------------------------------------------------------- public: the form and the link

def client_address(request) -> str | None:
    """The peer address as the ASGI server reports it. Behind a proxy, run uvicorn with
    --proxy-headers and --forwarded-allow-ips so that this is the client's, not the proxy's;
    X-Forwarded-For is not read here, since anyone can send it."""
    return request.client.host if request.client else None


async def subscribe_form(request, body: dict):
    """The public form's subscribe, on a decoded body. The route (POST /subscribe) is served by
    the preferences capability, which hands over every request without `contact.email_hmac`."""
    state = request.app.state
    ws = workspace_from(body.get("workspace_id"), "workspace_id is required")
    incoming, list_ids = model.parse_subscribe(body)
    email = incoming["email"]
    async with state.pool.acquire() as conn:
        # An unknown workspace has no lists: it answers like an unknown list, nothing more.
        model.check_lists(list_ids, await store.lists_by_ids(conn, ws, list_ids), True)
        wait = await ratelimit.count_attempt(conn, ws, model.rate_buckets(email, client_address(request)),
                                             model.RATE_WINDOW)
        if wait is not None:
            raise RuleError(model.RATE_LIMITED, 429, {"Retry-After": str(wait)})
        async with conn.transaction():
            rows = model.check_lists(list_ids,
                          await store.lists_by_ids(conn, ws, list_ids, share=True), True)
            await contacts_store.create_if_absent(conn, ws, incoming)
            await store.subscribe(conn, ws, email, rows, True, links(request, conn, ws, email))
    return json_response({"success": True})


async def public_confirm(request):
    """GET /confirm?workspace_id&list_id&email&expires&token: the link of a list.pending event."""
    if request.method != "GET":
        return error_response(405, "Method not allowed", {"Allow": "GET"})
    state = request.app.state
    params = request.query_params
    if any(len(params.getlist(name)) > 1 for name in model.CONFIRM_PARAMS):
        raise RuleError(model.INVALID_LINK)  # each part once, as it was signed
    req = model.parse_confirm(params)
    async with state.pool.acquire() as conn:
        secret = await secrets.workspace_secret(conn, req.workspace_id, state.settings.key_bytes, model.CONFIRM_SECRET,
                                                create=False)
        model.check_confirm(secret, req, time.time())
        async with conn.transaction():
            found = await store.lists_by_ids(conn, req.workspace_id, [req.list_id], share=True)
            if req.list_id not in found:
                raise RuleError(LIST_NOT_FOUND)
            await store.confirm(conn, req.workspace_id, found[req.list_id], req.email)
    return json_response({"success": True, "message": "subscription confirmed"})


# POST /subscribe is routed by preferences (its email_hmac variant is the preference center's);
# requests without email_hmac come back to subscribe_form above.
ROUTES = [
    Route("/confirm", public_confirm, methods=None),
]
