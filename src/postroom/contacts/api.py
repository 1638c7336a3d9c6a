"""Contact endpoints: decode -> model -> store -> encode."""

from __future__ import annotations

from postroom.contacts import model, store
from postroom.platform.http import ApiError, Call, Endpoint


def parse_or_400(parse, raw):
    try:
        return parse(raw)
    except model.ContactError as exc:
        raise ApiError(400, exc.message) from None


async def upsert(call: Call):
    if call.body.get("contact") is None:
        raise ApiError(400, "contact field is required")
    incoming = parse_or_400(model.parse_contact, call.body["contact"])
    action, row = await store.upsert(call.pool, call.workspace_id, incoming)
    contact = model.to_wire(row)
    return {"email": contact["email"], "action": action, "contact": contact, "error": None}


ENDPOINTS = [
    Endpoint("/api/contacts.upsert", "POST", upsert, resource="contacts", write=True),
]
