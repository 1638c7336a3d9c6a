"""Segment endpoints: decode -> model -> store -> encode.

Every route needs the `contacts` permission (reads: list, get, contacts, preview; writes: the
rest), as the contract names it. Each request is checked in full (400) before the membership and
permission checks (403), then the segment is looked up (404): the contract's order.
"""

from __future__ import annotations

import datetime as _dt

from postroom.platform import fields
from postroom.platform.errors import RuleError
from postroom.platform.http import Call, Endpoint, json_response
from postroom.segments import model, store

NOT_FOUND = "Segment not found"
BODY_MAX_DEPTH = 64  # JSON nesting of a body: a tree of 10 levels nests about 30 deep


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


async def _wire(conn, workspace_id: str, seg_id: str) -> dict:
    row = await store.get(conn, workspace_id, seg_id)
    if row is None:
        raise RuleError(NOT_FOUND, 404)
    return model.segment_wire(row, row["users_count"])


# ---------------------------------------------------------------- parsers (before 403)

def _query_workspace(call: Call) -> str:
    ws = call.param("workspace_id")
    if ws is None:
        raise RuleError("workspace_id is required")
    return ws


def _required_param(call: Call, name: str) -> str:
    value = call.param(name)
    if value is None:
        raise RuleError(f"{name} is required")
    return value


def parse_list(call: Call) -> bool:
    _query_workspace(call)
    return model.with_count(call.param("with_count"))  # counts are exact either way


def parse_get(call: Call) -> str:
    _query_workspace(call)
    return _required_param(call, "id")


def parse_contacts(call: Call) -> tuple[str, int, int]:
    _query_workspace(call)
    seg_id = _required_param(call, "segment_id")
    return seg_id, model.contacts_limit(call.param("limit")), model.contacts_offset(call.param("offset"))


def parse_delete(call: Call) -> str:
    model.parse_workspace(call.body)
    model.check_types(call.body, "id")
    return model.check_id(call.body.get("id"), "invalid delete segment request: ")


def parse_rebuild(call: Call) -> str:
    model.parse_workspace(call.body)
    model.check_types(call.body, "segment_id")
    seg_id = call.body.get("segment_id")
    if seg_id is None or seg_id == "":
        raise RuleError("segment_id is required")
    return fields.without_nul(seg_id, "segment_id")


def parse_preview(call: Call) -> tuple[model.Tree, int]:
    model.parse_workspace(call.body)
    _, tree = model.parse_tree_field(call.body, "")
    return tree, model.preview_limit(call.body.get("limit"))


# ---------------------------------------------------------------- handlers

async def list_segments(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.all_live(conn, call.workspace_id)
    return {"segments": [model.segment_wire(r, r["users_count"]) for r in rows]}


async def get_segment(call: Call):
    async with call.pool.acquire() as conn:
        return {"segment": await _wire(conn, call.workspace_id, call.input)}


async def create_segment(call: Call):
    seg = call.input
    async with call.pool.acquire() as conn:
        row = await store.create(conn, call.workspace_id, seg, _now())
    if row is None:
        raise RuleError("Segment id already exists")
    return json_response({"segment": model.segment_wire(row, 0)}, 201)


async def update_segment(call: Call):
    seg = call.input
    async with call.pool.acquire() as conn:
        async with conn.transaction():
            if not await store.update(conn, call.workspace_id, seg, _now()):
                raise RuleError(NOT_FOUND, 404)
        return {"segment": await _wire(conn, call.workspace_id, seg.id)}


async def _refusal(call: Call, conn, seg_id: str) -> str | None:
    """What still holds the segment (an active broadcast), asked of the capabilities above segments
    through app.state.segment_users (handed in by the composition root; segments never imports
    them): each `(conn, workspace_id, segment_id) -> refusal message or None`."""
    for user in getattr(call.request.app.state, "segment_users", ()):
        refusal = await user(conn, call.workspace_id, seg_id)
        if refusal:
            return refusal
    return None


async def delete_segment(call: Call):
    async with call.pool.acquire() as conn, conn.transaction():
        if await store.get(conn, call.workspace_id, call.input) is not None:
            refusal = await _refusal(call, conn, call.input)
            if refusal:
                raise RuleError(refusal, 400)
        if not await store.delete(conn, call.workspace_id, call.input):
            raise RuleError(NOT_FOUND, 404)
    return {"success": True}


async def rebuild_segment(call: Call):
    async with call.pool.acquire() as conn:
        if not await store.rebuild(conn, call.workspace_id, call.input):
            raise RuleError(NOT_FOUND, 404)
    return {"success": True, "message": "Segment rebuild has been queued"}


async def preview_segment(call: Call):
    tree, limit = call.input
    async with call.pool.acquire() as conn:
        total, emails, sql, args = await store.preview(conn, call.workspace_id, tree, limit)
    return {"emails": emails, "total_count": total, "limit": limit, "generated_sql": sql, "sql_args": args}


async def segment_contacts(call: Call):
    seg_id, limit, offset = call.input
    async with call.pool.acquire() as conn:
        if await store.get(conn, call.workspace_id, seg_id) is None:
            raise RuleError(NOT_FOUND, 404)
        emails = await store.members(conn, call.workspace_id, seg_id, limit, offset)
    return {"emails": emails, "limit": limit, "offset": offset}


def _post(path: str, handler, parse, write: bool = True) -> Endpoint:
    return Endpoint(path, "POST", handler, resource="contacts", write=write, parse=parse, max_depth=BODY_MAX_DEPTH)


ENDPOINTS = [
    Endpoint("/api/segments.list", "GET", list_segments, resource="contacts", parse=parse_list),
    Endpoint("/api/segments.get", "GET", get_segment, resource="contacts", parse=parse_get),
    _post("/api/segments.create", create_segment, lambda call: model.parse_segment(call.body, "create")),
    _post("/api/segments.update", update_segment, lambda call: model.parse_segment(call.body, "update")),
    _post("/api/segments.delete", delete_segment, parse_delete),
    _post("/api/segments.rebuild", rebuild_segment, parse_rebuild),
    _post("/api/segments.preview", preview_segment, parse_preview, write=False),
    Endpoint("/api/segments.contacts", "GET", segment_contacts, resource="contacts", parse=parse_contacts),
]
