"""timeline.list: a contact's history, newest first.

An entry on the wire, close to Notifuse's timeline entries:

    {"id": "123",                      # string, like Notifuse's
     "email": "a@example.com",
     "operation": "insert" | "update" | "delete",
     "entity_type": "contact" | "contact_list" | ...,
     "kind": "contact.created",        # the event type recorded (also the outbox event's type)
     "entity_id": "...",               # omitted when there is none
     "changes": {"field": {"old": .., "new": ..}} | null,
     "created_at": "2024-01-01T10:00:00.123456Z"}

Notifuse's `kind` is `<operation>_<entity_type>` (`insert_contact`); ours is the event type the
entry was recorded under, and `operation` is derived from it (see operation_of).
Paging: `limit` 1..100 (default 50), `cursor` = base64 of `<created_at>|<id>` of the last entry
(Notifuse's shape); pages follow the id, which grows with insertion.
"""

from __future__ import annotations

from postroom.contacts import model as contacts_model
from postroom.platform import paging
from postroom.platform.http import Call, Endpoint
from postroom.platform.errors import RuleError
from postroom.timeline import store

DEFAULT_LIMIT = 50
_INSERTS = ("created", "subscribed")
_DELETES = ("deleted", "removed")


def operation_of(kind: str) -> str:
    """`contact.created`/`list.subscribed` -> insert, `*.deleted`/`list.removed` -> delete,
    every other change of state (updated, unsubscribed, bounced, confirmed...) -> update."""
    verb = kind.rpartition(".")[2]
    if verb in _INSERTS:
        return "insert"
    if verb in _DELETES:
        return "delete"
    return "update"


def entry_wire(row) -> dict:
    entry = {"id": str(row["id"]), "email": row["email"], "operation": operation_of(row["kind"]),
             "entity_type": row["entity_type"], "kind": row["kind"]}
    if row["entity_id"] is not None:
        entry["entity_id"] = row["entity_id"]
    entry["changes"] = row["changes"]
    entry["created_at"] = contacts_model.format_time(row["created_at"])  # as contacts and cursors write it
    return entry


def _before(raw: str | None) -> int | None:
    if raw is None:
        return None
    _, key = paging.decode_cursor(raw, "|")
    if not key.isascii() or not key.isdigit() or len(key) > 18:
        raise RuleError(paging.CURSOR_ERROR)
    return int(key)


async def list_timeline(call: Call):
    raw = call.param("email")
    email = contacts_model.normalize_email(raw) if raw else ""
    if not email:
        raise RuleError("email is required")
    limit = paging.parse_limit(call.param("limit"), default=DEFAULT_LIMIT)
    before = _before(call.param("cursor"))
    async with call.pool.acquire() as conn:
        rows = await store.list_for(conn, call.workspace_id, email, before, limit + 1)
    out = {"timeline": [entry_wire(r) for r in rows[:limit]]}
    if len(rows) > limit:
        last = rows[limit - 1]
        out["next_cursor"] = paging.encode_cursor(last["created_at"], str(last["id"]), "|")
    return out


ENDPOINTS = [
    Endpoint("/api/timeline.list", "GET", list_timeline, resource="contacts"),
]
