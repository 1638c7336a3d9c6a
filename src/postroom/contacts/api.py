"""Contact endpoints: decode -> model -> store -> encode.

A contact's list memberships are lists' data: the reads that send them (getByEmail,
getByExternalID, contacts.list with with_contact_lists) add them here, from lists.store, and the
writes pass lists' follow-up of a created_at change (lists.store.sync_contact_created_at) to
contacts' store, and a deletion passes custom events' (customevents.store.delete_for: the
contact's events go with it).
"""

from __future__ import annotations

from postroom.contacts import model, query, store
from postroom.customevents import store as customevents_store
from postroom.lists import store as lists_store
from postroom.platform.fields import email_key
from postroom.platform.http import Call, Endpoint
from postroom.platform.errors import RuleError


async def upsert(call: Call):
    if "contact" not in call.body:  # absent; an explicit null is a contact without an email
        raise RuleError("contact field is required")
    if call.body["contact"] is None:
        raise model.ContactError("invalid contact: email is required")
    incoming = model.parse_contact(call.body["contact"])
    action, row = await store.upsert(call.pool, call.workspace_id, incoming,
                                     after_write=lists_store.sync_contact_created_at)
    contact = model.to_wire(row)
    return {"email": contact["email"], "action": action, "contact": contact, "error": None}


async def _add_memberships(conn, workspace_id: str, contacts: list[dict]) -> None:
    """Sets each contact's contact_lists (lists.store.memberships_for; [] when it has none)."""
    memberships = await lists_store.memberships_for(conn, workspace_id, [c["email"] for c in contacts])
    for contact in contacts:
        contact["contact_lists"] = memberships.get(contact["email"], [])


async def _get(call: Call, read, key: str):
    """getByEmail / getByExternalID: the contact `read` finds, with its list memberships and
    segment ids (read on one connection), or 404."""
    async with call.pool.acquire() as conn:
        found = await read(conn, call.workspace_id, key)
        if found is None:
            raise RuleError("Contact not found", 404)
        contact, segments = found
        await _add_memberships(conn, call.workspace_id, [contact])
    contact["contact_segments"] = segments
    return {"contact": contact}


async def get_by_email(call: Call):
    return await _get(call, store.get_by_email, email_key(call.param("email"), "Missing email"))


async def get_by_external_id(call: Call):
    external_id = (call.param("external_id") or "").strip()  # stored trimmed, like every string field
    if not external_id:
        raise RuleError("Missing external ID")
    return await _get(call, store.get_by_external_id, external_id)


async def count(call: Call):
    return {"total_contacts": await store.count(call.pool, call.workspace_id)}


async def list_contacts(call: Call):
    q = query.parse_list_query(call.query.multi_items())
    async with call.pool.acquire() as conn:
        contacts, next_cursor = await store.list_contacts(conn, call.workspace_id, q)
        if q.with_contact_lists and contacts:
            await _add_memberships(conn, call.workspace_id, contacts)
    out = {"contacts": contacts}
    if next_cursor is not None:
        out["next_cursor"] = next_cursor
    return out


async def delete(call: Call):
    email = email_key(call.body.get("email"))
    if await store.delete(call.pool, call.workspace_id, email, after_delete=customevents_store.delete_for) is None:
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
