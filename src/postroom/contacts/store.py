"""SQL for contacts, and the transaction that writes a contact with its side effects."""

from __future__ import annotations

import datetime as dt

from postroom.contacts import model
from postroom.timeline import store as timeline

COLUMNS = ", ".join(model.FIELDS)
_N = len(model.FIELDS)

SELECT_FOR_UPDATE = f"SELECT {COLUMNS} FROM contacts WHERE workspace_id = $1 AND email = $2 FOR UPDATE"

INSERT = f"""
INSERT INTO contacts (workspace_id, {COLUMNS})
VALUES ($1, {', '.join(f'${i}' for i in range(2, _N + 2))})
ON CONFLICT (workspace_id, email) DO NOTHING
RETURNING {COLUMNS}
"""

# email ($2) is the key and never changes; every other column takes the merged value.
UPDATE = f"""
UPDATE contacts SET {', '.join(f'{f} = ${i}' for i, f in enumerate(model.FIELDS, start=2) if f != 'email')}
 WHERE workspace_id = $1 AND email = $2
RETURNING {COLUMNS}
"""


def _values(row: dict) -> list:
    return [row[f] for f in model.FIELDS]


async def upsert(pool, workspace_id: str, incoming: dict) -> tuple[str, dict]:
    """Creates or merges one contact atomically; returns ("created" | "updated", stored row).

    Concurrent upserts of one new email: exactly one INSERT wins, the others wait for it on the
    conflict, then lock the row and merge into it, so every write is applied in some serial order.
    """
    email = incoming["email"]
    async with pool.acquire() as conn, conn.transaction():
        now = dt.datetime.now(dt.timezone.utc)
        existing = await conn.fetchrow(SELECT_FOR_UPDATE, workspace_id, email)
        if existing is None:
            new = model.merge(None, incoming, now)
            stored = await conn.fetchrow(INSERT, workspace_id, *_values(new))
            if stored is not None:
                stored = dict(stored)
                wire = model.to_wire(stored)
                await timeline.record(conn, workspace_id, email, "contact.created", "contact", email,
                                      model.diff(model.EMPTY, stored), {"contact": wire})
                return "created", stored
            existing = await conn.fetchrow(SELECT_FOR_UPDATE, workspace_id, email)
        old = dict(existing)
        new = model.merge(old, incoming, now)
        stored = dict(await conn.fetchrow(UPDATE, workspace_id, *_values(new)))
        changes = model.diff(old, stored)
        if changes:
            await timeline.record(conn, workspace_id, email, "contact.updated", "contact", email,
                                  changes, {"contact": model.to_wire(stored)})
        return "updated", stored
