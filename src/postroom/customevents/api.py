"""Custom-event endpoints (segments-contract, Custom events): decode -> model -> store -> encode.

Every request is checked whole (Endpoint.parse) before the membership and permission checks, as
the contract orders them. Writes need contacts write access, refused with Notifuse's own words
(`... required for custom events`); reads need contacts read access.
"""

from __future__ import annotations

import datetime as dt

from postroom.auth.model import permission_error
from postroom.customevents import model, store
from postroom.platform.errors import RuleError
from postroom.platform.http import Call, Endpoint, json_response


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _may_write(call: Call) -> None:
    denied = permission_error(call.membership, "contacts", True)
    if denied:
        raise RuleError(denied + model.WRITE_DENIED_SUFFIX, 403)


def parse_upsert(call: Call) -> model.Incoming:
    return model.parse_upsert(call.body, _now())


def parse_import(call: Call) -> list[model.Incoming]:
    return model.parse_import(call.body, _now())


def parse_get(call: Call) -> tuple[str, str]:
    workspace_id, event_name, external_id = (call.param(n) for n in ("workspace_id", "event_name", "external_id"))
    if not (workspace_id and event_name and external_id):
        raise model.CustomEventError(model.GET_REQUIRED)
    return event_name, external_id


def parse_list(call: Call) -> model.ListQuery:
    if call.param("workspace_id") is None:
        raise model.CustomEventError("workspace_id is required")
    return model.parse_list(call.param("email"), call.param("event_name"), call.param("limit"), call.param("offset"))


async def upsert(call: Call):
    _may_write(call)
    req: model.Incoming = call.input
    rows = await store.write(call.pool, call.workspace_id, [req])
    return {"event": model.to_wire(rows[req.key])}


async def import_events(call: Call):
    _may_write(call)
    requests: list[model.Incoming] = call.input
    await store.write(call.pool, call.workspace_id, requests)
    return json_response({"event_ids": [r.external_id for r in requests], "count": len(requests)}, status=201)


async def get(call: Call):
    async with call.pool.acquire() as conn:
        row = await store.get(conn, call.workspace_id, *call.input)
    if row is None:
        raise RuleError(model.NOT_FOUND, 404)
    return {"event": model.to_wire(row)}


async def list_events(call: Call):
    async with call.pool.acquire() as conn:
        rows = await store.list_events(conn, call.workspace_id, call.input)
    return {"events": [model.to_wire(r) for r in rows], "count": len(rows)}


# Writes name no resource: the membership is checked by the edge, the permission by _may_write.
ENDPOINTS = [
    Endpoint("/api/customEvents.upsert", "POST", upsert, parse=parse_upsert),
    Endpoint("/api/customEvents.create", "POST", upsert, parse=parse_upsert),
    Endpoint("/api/customEvents.import", "POST", import_events, parse=parse_import),
    Endpoint("/api/customEvents.get", "GET", get, resource="contacts", parse=parse_get),
    Endpoint("/api/customEvents.list", "GET", list_events, resource="contacts", parse=parse_list),
]
