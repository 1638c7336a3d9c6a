"""Contact endpoints: decode -> model -> store -> encode."""

from __future__ import annotations

from postroom.contacts import model, query, store
from postroom.platform.fields import email_key
from postroom.platform.http import Call, Endpoint
from postroom.platform.errors import RuleError


async def upsert(call: Call):
    if "contact" not in call.body:  # absent; an explicit null is a contact without an email
        raise RuleError("contact field is required")
    if call.body["contact"] is None:
        raise model.ContactError("invalid contact: email is required")
    incoming = model.parse_contact(call.body["contact"])
    action, row = await store.upsert(call.pool, call.workspace_id, incoming)
    contact = model.to_wire(row)
    return {"email": contact["email"], "action": action, "contact": contact, "error": None}


async def get_by_email(call: Call):
    email = email_key(call.param("email"), "Missing email")
    contact = await store.get_by_email(call.pool, call.workspace_id, email)
    if contact is None:
        raise RuleError("Contact not found", 404)
    return {"contact": contact}


async def get_by_external_id(call: Call):
    external_id = (call.param("external_id") or "").strip()  # stored trimmed, like every string field
    if not external_id:
        raise RuleError("Missing external ID")
    contact = await store.get_by_external_id(call.pool, call.workspace_id, external_id)
    if contact is None:
        raise RuleError("Contact not found", 404)
    return {"contact": contact}


async def count(call: Call):
    return {"total_contacts": await store.count(call.pool, call.workspace_id)}


async def list_contacts(call: Call):
    q = query.parse_list_query(call.query.multi_items())
    contacts, next_cursor = await store.list_contacts(call.pool, call.workspace_id, q)
    out = {"contacts": contacts}
    if next_cursor is not None:
        out["next_cursor"] = next_cursor
    return out


async def delete(call: Call):
    email = email_key(call.body.get("email"))
    if await store.delete(call.pool, call.workspace_id, email) is None:
        raise RuleError("Contact not found", 404)
    return {"success": True}


ENDPOINTS = [
    Endpoint("/api/contacts.upsert", "POST", upsert, resource="contacts", write=True),
    Endpoint("/api/contacts.getByEmail", "GET", get_by_email, resource="contacts",
             missing_workspace="Missing workspace ID"),
    Endpoint("/api/contacts.getByExternalID", "GET", get_by_external_id, resource="contacts",
             missing_workspace="Missing workspace ID"),
    Endpoint("/api/contacts.count", "GET", count, resource="contacts"),
    Endpoint("/api/contacts.list", "GET", list_contacts, resource="contacts"),
    Endpoint("/api/contacts.delete", "POST", delete, resource="contacts", write=True),
]
