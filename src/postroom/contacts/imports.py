"""POST /api/contacts.import: many contacts in one call, one operation per row.

Its list part is lists': the ids of subscribe_to_lists are checked against lists.store, and
each chunk's transaction runs lists' follow-ups (write_batch).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from postroom.contacts import bulk, bulk_store
from postroom.lists import model as lists_model, store as lists_store
from postroom.platform.http import Call, Endpoint
from postroom.platform.errors import RuleError

CHUNK_SIZE = 2000   # contacts per transaction
CONCURRENCY = 2     # chunks of one request written at once (one validated and planned while another is applied)
_YIELD_EVERY = 2000  # rows grouped between two turns of the event loop


def list_ids_from(value) -> list[str]:
    """subscribe_to_lists: absent or null means none; otherwise an array of list ids (deduplicated),
    at most as many as a subscribe takes."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError("subscribe_to_lists must be an array of list ids")
    ids = list(dict.fromkeys(value))
    if len(ids) > lists_model.MAX_LIST_IDS:
        raise RuleError(f"subscribe_to_lists must have at most {lists_model.MAX_LIST_IDS} items")
    return ids


async def import_contacts(call: Call):
    contacts = call.body.get("contacts")
    if not isinstance(contacts, list):
        raise RuleError("contacts must be an array")
    if not contacts:
        raise RuleError("contacts array is empty")
    list_ids = list_ids_from(call.body.get("subscribe_to_lists"))
    if list_ids:
        # an id that cannot be a list id (lists.model.LIST_ID; a NUL, which PostgreSQL text cannot
        # even hold) is unknown without asking, and is reported like any unknown one
        possible = [i for i in list_ids if lists_model.LIST_ID.fullmatch(i)]
        async with call.pool.acquire() as conn:
            missing = set(await lists_store.unknown_list_ids(conn, call.workspace_id, possible)) if possible else set()
        missing.update(set(list_ids).difference(possible))
        unknown = [i[:64] for i in list_ids if i in missing]  # in the request's order, each shown briefly
        if unknown:
            raise RuleError(f"list not found: {', '.join(unknown)}")
    batch = await import_rows(call.pool, call.workspace_id, contacts, list_ids)
    return {"operations": batch.ops}


async def import_rows(pool, workspace_id: str, contacts: list, list_ids: list[str]) -> bulk.Batch:
    """The endpoint's work once the request is checked: the rows grouped by the email they name,
    then validated and written chunk by chunk (write_batch). Returns the batch, whose
    `ops` are the response's operations."""
    batch = bulk.Batch()
    for i, raw in enumerate(contacts, 1):
        batch.defer(raw)
        if i % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # grouping 10,000 rows must not stall other requests
    await write_batch(pool, workspace_id, batch, list_ids, CHUNK_SIZE, CONCURRENCY)
    return batch


async def write_batch(pool, workspace_id: str, batch: bulk.Batch, list_ids: Sequence[str],
                      chunk_size: int, concurrency: int) -> None:
    """bulk_store.write_batch with lists' follow-ups in each chunk's transaction: the
    memberships of contacts whose created_at changed follow it (lists.store.sync_contact_created_at)
    and, with `list_ids` (subscribe_to_lists, checked), every contact of the chunk is added to
    those lists (lists.store.add_members). The endpoint's and `postroom contacts import`'s write."""
    subscribe = functools.partial(lists_store.add_members, list_ids=list(list_ids)) if list_ids else None
    await bulk_store.write_batch(pool, workspace_id, batch, chunk_size, concurrency,
                                 after_write=lists_store.sync_contact_created_at, after_chunk=subscribe)


ENDPOINTS = [
    Endpoint("/api/contacts.import", "POST", import_contacts, resource="contacts", write=True),
]
