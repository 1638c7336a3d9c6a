"""POST /api/contacts.import: many contacts in one call, one operation per row."""

from __future__ import annotations

import asyncio

from postroom.contacts import bulk, bulk_store
from postroom.lists import store as lists_store
from postroom.platform.http import ApiError, Call, Endpoint

CHUNK_SIZE = 2000   # contacts per transaction
CONCURRENCY = 2     # chunks of one request written at once (one planned while another is applied)
_YIELD_EVERY = 500  # rows validated between two turns of the event loop


def list_ids_from(value) -> list[str]:
    """subscribe_to_lists: absent or null means none; otherwise an array of list ids (deduplicated)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "subscribe_to_lists must be an array of list ids")
    return list(dict.fromkeys(value))


async def import_contacts(call: Call):
    contacts = call.body.get("contacts")
    if not isinstance(contacts, list):
        raise ApiError(400, "contacts must be an array")
    if not contacts:
        raise ApiError(400, "contacts array is empty")
    list_ids = list_ids_from(call.body.get("subscribe_to_lists"))
    if list_ids:
        async with call.pool.acquire() as conn:
            unknown = await lists_store.unknown_list_ids(conn, call.workspace_id, list_ids)
        if unknown:
            raise ApiError(400, f"list not found: {', '.join(unknown)}")
    batch = bulk.Batch()
    for i, raw in enumerate(contacts, 1):
        batch.add(raw)
        if i % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # validating 10,000 rows must not stall other requests
    await bulk_store.write_batch(call.pool, call.workspace_id, batch, list_ids, CHUNK_SIZE, CONCURRENCY)
    return {"operations": batch.ops}


ENDPOINTS = [
    Endpoint("/api/contacts.import", "POST", import_contacts, resource="contacts", write=True),
]
