"""SQL of custom events. Rules come from customevents/model.py; this module only reads and writes.

A write (an upsert, or an import of up to 50 events) is one transaction of three round trips
whatever its size: the missing contacts created (contacts.store.create_missing, with their
`contact.created` entries and events), the events' stored rows locked, and one statement that
writes every changed row with its timeline entries and outbox events, sent as `unnest` arrays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Mapping, Sequence

import asyncpg

from postroom.contacts import store as contacts_store
from postroom.customevents import model
from postroom.events import store as events
from postroom.platform import db
from postroom.timeline import store as timeline

COLUMNS = ", ".join(model.COLUMNS)
Key = tuple[str, str]

# The stored rows of the keys, locked in key order (concurrent writers lock in the same order),
# each looked up by primary key (the workspace comes from the outer list: see
# contacts.bulk_store.SELECT_FOR_UPDATE for why not as a constant).
LOCK = f"""
SELECT c.* FROM (SELECT DISTINCT $1::text AS workspace_id, k.event_name, k.external_id
                   FROM unnest($2::text[], $3::text[]) AS k(event_name, external_id)
                  ORDER BY 2, 3 OFFSET 0) k
 CROSS JOIN LATERAL (SELECT {COLUMNS} FROM custom_events c
                      WHERE c.workspace_id = k.workspace_id AND c.event_name = k.event_name
                        AND c.external_id = k.external_id FOR UPDATE) c
"""

_TYPES = {"properties": "jsonb", "occurred_at": "timestamptz", "goal_value": "numeric", "deleted_at": "timestamptz",
          "created_at": "timestamptz", "updated_at": "timestamptz"}
_N = len(model.COLUMNS)
_ROWS = ", ".join(f"${i}::{_TYPES.get(f, 'text')}[]" for i, f in enumerate(model.COLUMNS, start=2))
_E = _N + 3  # first parameter of the side effects, after workspace_id, the columns and `existed`
_KEPT = [f for f in model.COLUMNS if f not in ("event_name", "external_id", "created_at")]

# $1 workspace; $2.. the rows to write (one per changed key, final state) and whether each
# existed; then each accepted change's timeline entry and outbox event, in input order: email,
# kind, entity_id, changes, created_at (the event's occurred_at), event type, event data.
# Returns how many new rows were inserted: fewer than planned means a concurrent insert of a
# key, and the caller rolls back and tries again.
_ENTRIES = f"""SELECT $1, x.email, x.kind, '{model.ENTITY_TYPE}', x.entity_id, x.changes, x.at
      FROM unnest(${_E}::text[], ${_E + 1}::text[], ${_E + 2}::text[], ${_E + 3}::jsonb[], ${_E + 4}::timestamptz[])
           WITH ORDINALITY AS x(email, kind, entity_id, changes, at, n)
     ORDER BY x.n"""
_EVENTS = f"""SELECT $1, x.type, x.email, x.data
      FROM unnest(${_E}::text[], ${_E + 5}::text[], ${_E + 6}::jsonb[]) WITH ORDINALITY AS x(email, type, data, n)
     ORDER BY x.n"""
_SET = ", ".join(f"{f} = i.{f}" for f in _KEPT)
WRITE = f"""
WITH input AS (
    SELECT * FROM unnest({_ROWS}, ${_N + 2}::boolean[]) AS t({COLUMNS}, existed)
), updated AS (
    UPDATE custom_events c SET {_SET}
      FROM input i
     WHERE i.existed AND c.workspace_id = $1 AND c.event_name = i.event_name AND c.external_id = i.external_id
), inserted AS (
    INSERT INTO custom_events (workspace_id, {COLUMNS})
    SELECT $1, {COLUMNS} FROM input WHERE NOT existed ORDER BY event_name, external_id
    ON CONFLICT (workspace_id, event_name, external_id) DO NOTHING
    RETURNING 1
), entry AS (
    {timeline.insert_sql(_ENTRIES, at=True)}
), event AS (
    {events.insert_sql(_EVENTS)}
)
SELECT count(*) FROM inserted
"""

MAX_ATTEMPTS = 8
# Planner statistics of custom_events refreshed as it doubles (platform.db.GrowthStats). The
# statements above are prepared once per connection and their generic plans cached: planned on a
# nearly empty table, LOCK scanned the whole table for each key (measured 4 ms a batch at 250
# rows, 250 ms at 5,000). An ANALYZE invalidates those plans; the first comes early, since each
# batch pays for a scan until then.
GROWTH = db.GrowthStats(("custom_events",), minimum=500)
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


class _ConcurrentInsert(Exception):
    """A key planned as new was inserted by someone else meanwhile."""


def _write_args(workspace_id: str, final: Mapping[Key, dict], stored: Mapping[Key, Mapping],
                changes: Sequence[model.Change]) -> list:
    rows = list(final.items())
    args: list = [workspace_id]
    args += [[row[f] for _, row in rows] for f in model.COLUMNS]
    args.append([key in stored for key, _ in rows])
    args.append([c.row["email"] for c in changes])
    args.append([f"{model.ENTITY_TYPE}.{c.row['event_name']}" for c in changes])
    args.append([c.row["external_id"] for c in changes])
    args.append([c.changes for c in changes])
    args.append([c.row["occurred_at"] for c in changes])
    args.append([c.event_type for c in changes])
    args.append([model.event_data(c.row) for c in changes])
    return args


async def write(pool, workspace_id: str, requests: Sequence[model.Incoming]) -> dict[Key, dict]:
    """Applies `requests` in order (model.plan) in one transaction: the contacts of the requests
    that are not deletes are created where missing, then every changed event is written with its
    timeline entry and outbox event; a request that changes nothing writes nothing. Returns each
    key's row as stored after the call. Retries on a concurrent insert of a key, a deadlock or a
    serialization failure."""
    keys = list(dict.fromkeys(r.key for r in requests))
    emails = [r.email for r in requests if not r.deletes]
    async with pool.acquire() as conn:
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with conn.transaction():
                    await contacts_store.create_missing(conn, pool, workspace_id, emails)
                    locked = await conn.fetch(LOCK, workspace_id, [k[0] for k in keys], [k[1] for k in keys])
                    stored = {(r["event_name"], r["external_id"]): dict(r) for r in locked}
                    final, changes = model.plan(stored, requests, dt.datetime.now(dt.timezone.utc))
                    new = sum(1 for key in final if key not in stored)
                    if changes and await conn.fetchval(WRITE, *_write_args(workspace_id, final, stored, changes)) != new:
                        raise _ConcurrentInsert
                if new:
                    GROWTH.note(pool, new)
                return {**stored, **final}
            except (_ConcurrentInsert, *_RETRYABLE):
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- reads

GET = f"""
SELECT {COLUMNS} FROM custom_events
 WHERE workspace_id = $1 AND event_name = $2 AND external_id = $3 AND deleted_at IS NULL
"""

_LIST = f"""
SELECT {COLUMNS} FROM custom_events
 WHERE workspace_id = $1 AND {{where}} AND deleted_at IS NULL
 ORDER BY occurred_at DESC, event_name, external_id
 LIMIT $2 OFFSET $3
"""
# One statement per filter shape, so each is planned on its own index (custom_events_contact for
# an email, custom_events_name for a name).
LIST_BY_EMAIL = _LIST.format(where="email = $4")
LIST_BY_NAME = _LIST.format(where="event_name = $4")
LIST_BY_BOTH = _LIST.format(where="email = $4 AND event_name = $5")


async def get(conn, workspace_id: str, event_name: str, external_id: str):
    """The live event of the key, or None (unknown or deleted)."""
    return await conn.fetchrow(GET, workspace_id, event_name, external_id)


async def list_events(conn, workspace_id: str, q: model.ListQuery) -> list:
    if q.email is not None and q.event_name is not None:
        return await conn.fetch(LIST_BY_BOTH, workspace_id, q.limit, q.offset, q.email, q.event_name)
    if q.email is not None:
        return await conn.fetch(LIST_BY_EMAIL, workspace_id, q.limit, q.offset, q.email)
    return await conn.fetch(LIST_BY_NAME, workspace_id, q.limit, q.offset, q.event_name)


DELETE_FOR = "DELETE FROM custom_events WHERE workspace_id = $1 AND email = $2"


async def delete_for(conn, workspace_id: str, email: str) -> None:
    """Removes the contact's custom events (contacts.delete's after_delete, in its transaction)."""
    await conn.execute(DELETE_FOR, workspace_id, email)
