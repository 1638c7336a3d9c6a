"""timeline.list: a contact's history, newest first (an entry's wire form: timeline.model).

Paging: `limit` 1..100 (default 50), `cursor` = base64 of `<created_at>|<id>` of the last entry
(Notifuse's shape); pages follow the id, which grows with insertion.
"""

from __future__ import annotations

from postroom.platform import paging
from postroom.platform.errors import RuleError
from postroom.platform.fields import email_key
from postroom.platform.http import Call, Endpoint
from postroom.timeline import model, store

DEFAULT_LIMIT = 50


def _before(raw: str | None) -> int | None:
    if raw is None:
        return None
    _, key = paging.decode_cursor(raw, "|")
    if not key.isascii() or not key.isdigit() or len(key) > 18:
        raise RuleError(paging.CURSOR_ERROR)
    return int(key)


async def list_timeline(call: Call):
    email = email_key(call.param("email"))
    limit = paging.parse_limit(call.param("limit"), default=DEFAULT_LIMIT)
    before = _before(call.param("cursor"))
    async with call.pool.acquire() as conn:
        rows = await store.list_for(conn, call.workspace_id, email, before, limit + 1)
    out = {"timeline": [model.entry_wire(r) for r in rows[:limit]]}
    if len(rows) > limit:
        last = rows[limit - 1]
        out["next_cursor"] = paging.encode_cursor(last["created_at"], str(last["id"]), "|")
    return out


ENDPOINTS = [
    Endpoint("/api/timeline.list", "GET", list_timeline, resource="contacts"),
]
